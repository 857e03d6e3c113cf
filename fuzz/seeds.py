#!/usr/bin/env python3
"""Builds the fuzz seed corpora and dictionaries from the repository's own files.

Nothing here is a hand-kept blob: requests, bodies and lines come from the
plugin captures (tests/fixtures, plus any capture directories given as
arguments, e.g. ../shared/fixtures), configs from the packaged samples
(packaging/systemd, the OpenWrt UCI file with the kinds its init script
declares), and dictionary words from the field and key names in the source.
A seed the code stops accepting then shows up as lost coverage, not as a
stale file.

    python3 fuzz/seeds.py [CAPTURE_DIR ...]    # writes fuzz/seeds/<target>/ and <target>.dict
"""

import base64
import email.utils
import hashlib
import json
import plistlib
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds"


def captures(dirs):
    """(kind, name, bytes) of every capture file, deduplicated by content."""
    seen = set()
    for base in dirs:
        for path in sorted(Path(base).rglob("*")):
            if path.suffix not in (".http", ".line") or not path.is_file():
                continue
            data = path.read_bytes()
            if data in seen:
                continue
            seen.add(data)
            name = "-".join(path.relative_to(base).parts)
            yield path.suffix[1:], name, data


class Target:
    def __init__(self, name):
        self.dir = OUT / name
        self.dir.mkdir(parents=True)
        self.words = set()
        self.name = name
        self.seen = set()

    def seed(self, name, data):
        if isinstance(data, str):
            data = data.encode()
        if data in self.seen:
            return
        self.seen.add(data)
        # Names stay readable; the hash keeps two seeds of one name apart.
        digest = hashlib.sha1(data).hexdigest()[:8]
        (self.dir / f"{name}-{digest}").write_bytes(data)

    def word(self, *words):
        self.words.update(w for w in words if w)

    def write_dict(self):
        lines = []
        for w in sorted(self.words):
            escaped = "".join(
                c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else f"\\x{ord(c):02x}"
                for c in w
            )
            lines.append(f'"{escaped}"')
        (OUT / f"{self.name}.dict").write_text("\n".join(lines) + "\n")


def split_request(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


def source(path):
    return (ROOT / path).read_text()


def quoted_after(text, pattern):
    """Every string literal in `text` matched by `pattern`'s group 1."""
    return re.findall(pattern, text, re.M)


def default_limit(field, fallback):
    """A size from `Limits::default()` in src/limits.rs (a product of
    integers); `fallback` only sizes the seed if the field moves."""
    m = re.search(rf"\b{field}: ([\d\s*]+),", source("src/limits.rs"))
    if not m:
        return fallback
    product = 1
    for factor in m.group(1).split("*"):
        product *= int(factor)
    return product


def uci_options():
    """(option, value, active) from the OpenWrt config, commented examples too."""
    out = []
    for line in source("openwrt/files/xapsd.config").splitlines():
        m = re.match(r"\s*(#?)\s*(option|list)\s+(\w+)\s+'([^']*)'", line)
        if m:
            out.append((m.group(3), m.group(4), m.group(1) == ""))
    return out


def uci_kinds():
    """option -> str/int/bool/list, as the init script maps UCI to JSON."""
    return dict(re.findall(r"^\t(\w+):(str|int|bool|list)$", source("openwrt/files/xapsd.init"), re.M))


def uci_json(options, kinds):
    config = {}
    for key, value, _ in options:
        kind = kinds.get(key)
        if kind is None or value == "":
            continue
        if kind == "list":
            config.setdefault(key, []).append(value)
        elif kind == "int":
            config[key] = int(value)
        elif kind == "bool":
            config[key] = value in ("1", "true", "yes", "on")
        else:
            config[key] = value
    return config


def main():
    capture_dirs = [ROOT / "tests" / "fixtures"] + [Path(d) for d in sys.argv[1:]]
    if OUT.exists():
        shutil.rmtree(OUT)
    http, body, legacy = Target("http_request"), Target("json_body"), Target("legacy_line")
    config, go_db, go_conf = Target("config_file"), Target("go_database"), Target("go_config")
    plist = Target("apple_id_plist")

    requests = [(n, d) for k, n, d in captures(capture_dirs) if k == "http"]
    lines = [(n, d) for k, n, d in captures(capture_dirs) if k == "line"]

    # HTTP: each capture, each directory's captures back to back (one
    # keep-alive connection), and the other routes on a captured head.
    per_dir = {}
    for name, data in requests:
        http.seed(name, data)
        per_dir.setdefault(name.rsplit("-", 2)[0], []).append(data)
    for prefix, datas in per_dir.items():
        http.seed(f"keepalive-{prefix}", b"".join(datas))
    heads = [split_request(d)[0] for _, d in requests]
    bodies = [(n, split_request(d)[1]) for n, d in requests]
    users = sorted({json.loads(b).get("Username", "") for _, b in bodies} - {""})
    sample_head = next(h for h in heads if b"Authorization:" in h)
    head_lines = sample_head.split(b"\r\n")[1:]
    kept = [h for h in head_lines if h and not h.lower().startswith(b"content-length")]
    for route, payload, extra in [
        (b"GET /health", b"", []),
        (b"GET /metrics", b"", []),
        (b"POST /admin/devices", json.dumps({"user": users[0]}).encode(), [b"X-Xapsd-Admin: 1"]),
        (b"POST /admin/remove", json.dumps({"user": users[0]}).encode(), [b"X-Xapsd-Admin: 1"]),
    ]:
        lines_out = [route + b" HTTP/1.1"] + kept + extra
        lines_out.append(b"Content-Length: %d" % len(payload))
        name = route.split(b" ")[1].strip(b"/").replace(b"/", b"-").decode()
        http.seed(f"route-{name}", b"\r\n".join(lines_out) + b"\r\n\r\n" + payload)
    # Just over the head bound (431), so libFuzzer's length limit covers it.
    big_head = split_request(requests[0][1])[0][:-2]
    head_bound = default_limit("max_request_head", 8192)
    http.seed("over-head-bound", big_head + b"X-Padding: " + b"p" * head_bound + b"\r\n\r\n")
    for h in heads:
        for line in h.split(b"\r\n")[1:]:
            if b":" in line:
                http.word(line.split(b":")[0].decode() + ": ")
    http.word("POST ", "GET ", " HTTP/1.1\r\n", " HTTP/1.0\r\n", "\r\n", "Basic ",
              "/register", "/notify", "/health", "/metrics", "/admin/devices", "/admin/remove",
              "/admin/push", "X-Xapsd-Admin: 1", "Transfer-Encoding: chunked", "close", "keep-alive")

    # JSON bodies, and the field names json.rs reads.
    for name, data in bodies:
        body.seed(name.rsplit(".", 1)[0], data)
    # A registration with one mailbox more than a device may have.
    reg_name, reg_body = next((n, b) for n, b in bodies if b'"Mailboxes"' in b)
    many = json.loads(reg_body)
    many["Mailboxes"] = [f"Folder {i}" for i in range(default_limit("max_mailboxes_per_device", 256) + 1)]
    body.seed("over-mailbox-bound", json.dumps(many))
    fields = quoted_after(source("src/plugin/json.rs"), r'take_strings?\(&mut o, "(\w+)"\)')
    for f in fields:
        body.word(f'"{f}"', f'"{f}":')
        http.word(f'"{f}":')
    body.word("null", "[]", "{}", "true", "\\u0000", "\\ud800")

    # Legacy lines, and the field names legacy.rs knows.
    for name, data in lines:
        legacy.seed(name.rsplit(".", 1)[0], data)
    # A captured line padded with an unknown field to the line bound.
    line_bound = default_limit("max_legacy_line", 16384)
    first = lines[0][1].rstrip(b"\r\n")
    pad = line_bound - len(first) - len(b'\tx-padding=""\r\n')
    legacy.seed("at-line-bound", first + b'\tx-padding="' + b"p" * max(pad, 0) + b'"\r\n')
    for f in set(quoted_after(source("src/plugin/legacy.rs"), r'"([a-z]+(?:-[a-z]+)+)"')):
        legacy.word(f + '="', f + "=(")
    legacy.word("events=(", "REGISTER ", "NOTIFY ", "\t", '","', '")', "\\\"", "\r\n")

    # Config files: the systemd sample, the OpenWrt defaults as its init
    # script writes them, the same with every commented example filled in,
    # and one file per key so each key's parser is a short mutation away.
    config.seed("systemd-xapsd.json", source("packaging/systemd/xapsd.json"))
    options, kinds = uci_options(), uci_kinds()
    config.seed("openwrt-default", json.dumps(uci_json([o for o in options if o[2]], kinds)))
    everything = uci_json(options, kinds)
    config.seed("openwrt-all-examples", json.dumps(everything, indent=1))
    for key, value in everything.items():
        config.seed(f"key-{key}", json.dumps({key: value}))
    keys = quoted_after(source("src/config.rs"), r'^\s*\("(\w+)", "')
    for key in keys:
        config.word(f'"{key}":')
    config.word("production", "sandbox", "trace", "debug", "[::1]:11619", "127.0.0.1:", "@/", "0660", "true", "null")

    # Go database.json: the captured registrations in the Go daemon's shape
    # (registered when captured), without and with its AppleCerts holding
    # the committed test certificate and key.
    users_json = {}
    for name, data in requests:
        head, payload = split_request(data)
        if b"/register" not in head.split(b"\r\n")[0]:
            continue
        reg = json.loads(payload)
        date = re.search(rb"\r\nDate: ([^\r]+)", head)
        when = email.utils.parsedate_to_datetime(date.group(1).decode()) if date else None
        account = {"DeviceToken": reg["ApsDeviceToken"], "Mailboxes": reg["Mailboxes"]}
        if when:
            account["RegistrationTime"] = when.isoformat().replace("+00:00", "Z")
        users_json.setdefault(reg["Username"], {"Accounts": {}})["Accounts"][reg["ApsAccountId"]] = account
    go_db.seed("registrations", json.dumps({"Users": users_json, "AppleCerts": {"Signature": None, "Keys": None}}))

    def der(pem_file):
        text = (ROOT / "tests/fixtures/keys" / pem_file).read_text()
        return "".join(l for l in text.splitlines() if l and not l.startswith("-----"))

    cert, key = der("rsa-selfsigned.crt.pem"), der("rsa2048-test.pkcs1.pem")
    base64.b64decode(cert), base64.b64decode(key)  # both must be base64 DER
    signature = [{"Certificate": [cert], "PrivateKey": None, "Leaf": None}] * 5
    go_db.seed("with-apple-certs", json.dumps({"Users": users_json, "AppleCerts": {"Signature": signature, "Keys": [key] * 5}}))
    for w in ["Users", "Accounts", "DeviceToken", "Mailboxes", "RegistrationTime", "AppleCerts", "Signature", "Keys", "Certificate"]:
        go_db.word(f'"{w}":')
    go_db.word("2026-11-29T12:01:58Z", "+01:00", ".123456", "null")

    # Go xapsd.yaml: every key import.rs knows, valued from the OpenWrt sample
    # where xapsd has the same setting.
    go_keys = re.search(r"const KNOWN: \[&str; \d+\] = \[(.*?)\];", source("src/import.rs"), re.S)
    go_keys = re.findall(r'"(\w+)"', go_keys.group(1))
    listen = everything["listen"][0].rsplit(":", 1)
    sample = {
        "loglevel": everything.get("log_level", "info"), "listenAddr": listen[0], "port": listen[1],
        "delay": "30", "databaseFile": "/var/lib/xapsd/database.json",
        "certificateFilePem": everything.get("cert_file", ""), "certificateFilePemKey": everything.get("key_file", ""),
    }
    go_conf.seed("known", "".join(f"{k}: {sample.get(k, 'x')}\n" for k in go_keys if k in sample))
    go_conf.seed("all-keys", "---\n# every key\n" + "".join(f'{k}: "{sample.get(k, "value")}"\n' for k in go_keys))
    for k in go_keys:
        go_conf.word(k + ": ")
    go_conf.word("---\n", "#", "  ", '"', "'")

    # Apple-ID service answers, in the shape protocols.md gives: five issued
    # certificates (the committed test certificate stands in for each), as
    # PEM strings and as data, and the refusals Apple is known to send.
    cert_pem = (ROOT / "tests" / "fixtures" / "keys" / "rsa-selfsigned.crt.pem").read_text()
    services = ["Service_Calendar", "Service_Contact", "Service_Mail", "Service_Mgmt", "Service_Alerts"]
    header = {"ClientApplicationName": "XServer", "TransactionId": "1", "Version": "1"}

    def answer(code, message="", certs=None):
        response = {"Status": {"ErrorCode": code, "ErrorMessage": message, "ErrorDescription": message}}
        if certs is not None:
            response["Certificates"] = certs
        return plistlib.dumps({"Header": header, "Response": response}, fmt=plistlib.FMT_XML)

    issued = [{"Certificate": cert_pem, "CertRequestNo": n, "ServiceType": s,
               "Description": f"xapsd - apns:com.apple.{s}"} for n, s in enumerate(services)]
    plist.seed("issued", answer(0, certs=issued))
    plist.seed("issued-data", answer(0, certs=[dict(c, Certificate=c["Certificate"].encode()) for c in issued]))
    plist.seed("retired", answer(-80010, "ServiceType is Invalid"))
    plist.seed("two-factor", answer(-20358, "Invalid Session"))
    plist.seed("no-certificates", answer(0))
    plist.word("<dict>", "</dict>", "<key>", "</key>", "<string>", "</string>", "<data>", "</data>",
               "<array>", "</array>", "<integer>", "</integer>", "<true/>", "<false/>", "<plist version=\"1.0\">",
               "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----")
    for key in ("Header", "Response", "Status", "ErrorCode", "ErrorMessage", "ErrorDescription",
                "Certificates", "Certificate", "CertRequestNo", "ServiceType", "Description"):
        plist.word(key)

    for t in (http, body, legacy, config, go_db, go_conf, plist):
        t.write_dict()
        print(f"{t.name}: {len(list(t.dir.iterdir()))} seeds, {len(t.words)} dictionary words")


if __name__ == "__main__":
    main()

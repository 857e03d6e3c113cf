#!/usr/bin/env python3
"""Run the procd and OpenRC scripts in busybox ash and check what they produce.

  check_init.py

Each script runs in a throwaway chroot whose /bin/sh is a static busybox,
with stand-ins (packaging/tests/standins/) for OpenWrt's rc.common,
functions.sh (config_get & co.) and procd.sh, and for openrc-run. For a
sample /etc/config/xapsd and a sample /etc/conf.d/xapsd it checks the exact
daemon command, the exact JSON config and its owner and mode. With
XAPSD_BINARY set to a build that runs here, the daemon's own
`xapsd check-config` must accept the JSON made from the shipped settings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pkgtest import ROOT, Checks, install_standin, make_root, run_in_root

XAPSD_USER = "xapsd:x:200:200:xapsd:/var/run/xapsd:/bin/false\n"

SAMPLE_UCI = r"""
config xapsd 'main'
	option enabled '1'
	list listen '0.0.0.0:11619'
	list listen '[::]:11619'
	option db '/mnt/usb/xapsd/xapsd.redb'
	option cert_file '/etc/xapsd/push "2024".pem'
	option key_file '/etc/xapsd/push\key.pem'
	option p12_password_file '/etc/xapsd/push.pass'
	option apns_endpoint 'sandbox'
	option apns_ca_file '/etc/ssl/apple.pem'
	option delay_secs '10'
	option expire_days '60'
	option log_level 'debug'
	option legacy_socket '/var/run/dovecot/xapsd.sock'
	option legacy_socket_mode '0660'
"""

SAMPLE_JSON = """{
	"listen": ["0.0.0.0:11619", "[::]:11619"],
	"db": "/mnt/usb/xapsd/xapsd.redb",
	"cert_file": "/etc/xapsd/push \\"2024\\".pem",
	"key_file": "/etc/xapsd/push\\\\key.pem",
	"p12_password_file": "/etc/xapsd/push.pass",
	"apns_endpoint": "sandbox",
	"apns_ca_file": "/etc/ssl/apple.pem",
	"delay_secs": 10,
	"expire_days": 60,
	"log_level": "debug",
	"legacy_socket": "/var/run/dovecot/xapsd.sock",
	"legacy_socket_mode": "0660"
}
"""

DEFAULT_JSON = """{
	"listen": ["127.0.0.1:11619", "[::1]:11619"],
	"db": "/etc/xapsd/xapsd.redb",
	"apns_endpoint": "production",
	"log_level": "info"
}
"""

PROCD_CALLS = """open_instance
set_param [command] [/usr/bin/xapsd] [run] [--config] [/var/etc/xapsd.json]
set_param [user] [xapsd]
set_param [group] [xapsd]
set_param [file] [/etc/config/xapsd]
set_param [respawn]
set_param [stdout] [1]
set_param [stderr] [1]
close_instance
add_reload_trigger [xapsd]
"""

SAMPLE_CONFD = """# sample /etc/conf.d/xapsd
listen="0.0.0.0:11619 [::]:11619"
db="/srv/xapsd/xapsd.redb"
cert_file="/etc/xapsd/push.pem"
key_file="/etc/xapsd/push.key"
p12_password_file="/etc/xapsd/push.pass"
apns_endpoint="sandbox"
apns_ca_file="/etc/ssl/apple.pem"
delay_secs="10"
expire_days="60"
log_level="debug"
legacy_socket="/var/run/dovecot/xapsd.sock"
legacy_socket_mode="0660"
"""

SAMPLE_CONFD_JSON = """{
	"listen": ["0.0.0.0:11619", "[::]:11619"],
	"db": "/srv/xapsd/xapsd.redb",
	"cert_file": "/etc/xapsd/push.pem",
	"key_file": "/etc/xapsd/push.key",
	"p12_password_file": "/etc/xapsd/push.pass",
	"apns_endpoint": "sandbox",
	"apns_ca_file": "/etc/ssl/apple.pem",
	"delay_secs": 10,
	"expire_days": 60,
	"log_level": "debug",
	"legacy_socket": "/var/run/dovecot/xapsd.sock",
	"legacy_socket_mode": "0660"
}
"""

OPENRC_CALLS = """checkpath -d 0750 xapsd:xapsd /srv/xapsd
checkpath -d 0700 xapsd:xapsd /run/xapsd
checkpath -f 0640 xapsd:xapsd /var/log/xapsd.log
checkpath -f 0600 xapsd:xapsd /run/xapsd/xapsd.json
supervisor=supervise-daemon
command_user=xapsd:xapsd
error_log=/var/log/xapsd.log
command=/usr/bin/xapsd run --config /run/xapsd/xapsd.json
"""

OPENRC_DEFAULT_CALLS = OPENRC_CALLS.replace("/srv/xapsd", "/var/lib/xapsd")


def daemon_accepts(c: Checks, label: str, conf: Path) -> None:
    """Ask the daemon itself (a host-runnable build in $XAPSD_BINARY) about the JSON."""
    binary = os.environ.get("XAPSD_BINARY")
    if not binary or not conf.exists():
        return
    r = subprocess.run([binary, "check-config", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    c.check(r.returncode == 0, f"{label}: `xapsd check-config` accepts the JSON",
            (r.stdout + r.stderr).strip())


def procd_root(uci: str) -> Path:
    root = make_root(XAPSD_USER)
    (root / "etc/group").write_text("root:x:0:\nxapsd:x:200:\n")
    install_standin(root, "functions.sh", "/lib/functions.sh", 0o644)
    install_standin(root, "procd.sh", "/lib/functions/procd.sh", 0o644)
    install_standin(root, "rc.common", "/etc/rc.common")
    (root / "etc/init.d").mkdir(parents=True)
    shutil.copy(ROOT / "openwrt/files/xapsd.init", root / "etc/init.d/xapsd")
    os.chmod(root / "etc/init.d/xapsd", 0o755)
    (root / "etc/config").mkdir()
    (root / "etc/config/xapsd").write_text(uci)
    return root


def check_procd(c: Checks, label: str, uci: str, want_json: str | None, want_calls: str,
                want_db_dir: str | None, want_rc: int = 0, ask_daemon: bool = False) -> None:
    root = procd_root(uci)
    try:
        r = run_in_root(root, "/etc/init.d/xapsd start", {"PROCD_LOG": "/tmp/procd.log"})
        c.equal(r.returncode, want_rc, f"procd {label}: start exits {want_rc}")
        log = root / "tmp/procd.log"
        calls = log.read_text() if log.exists() else ""
        c.equal(calls, want_calls, f"procd {label}: exact procd calls (daemon command)")
        conf = root / "var/etc/xapsd.json"
        if want_json is None:
            c.check(not conf.exists(), f"procd {label}: no config written")
            return
        got = conf.read_text() if conf.exists() else None
        c.equal(got, want_json, f"procd {label}: exact generated JSON")
        try:
            json.loads(got or "")
            c.check(True, f"procd {label}: JSON parses")
        except ValueError as e:
            c.check(False, f"procd {label}: JSON parses", e)
        if ask_daemon:
            daemon_accepts(c, f"procd {label}", conf)
        if conf.exists():
            st = conf.stat()
            c.equal(oct(st.st_mode & 0o7777), oct(0o600), f"procd {label}: config mode 0600")
            c.equal((st.st_uid, st.st_gid), (200, 200), f"procd {label}: config owned by xapsd")
        c.check(not (root / "var/etc/xapsd.json.new").exists(), f"procd {label}: no temp file left")
        if want_db_dir:
            d = root / want_db_dir.lstrip("/")
            c.check(d.is_dir() and d.stat().st_uid == 200, f"procd {label}: {want_db_dir} made, owned by xapsd")
        # Reloading rewrites the same file, not a second instance of it.
        (root / "tmp/procd.log").unlink()
        r = run_in_root(root, "/etc/init.d/xapsd reload", {"PROCD_LOG": "/tmp/procd.log"})
        c.equal(conf.read_text(), want_json, f"procd {label}: reload writes the same JSON")
    finally:
        shutil.rmtree(root)


def openrc_root(confd: str | None) -> Path:
    root = make_root("xapsd:x:200:200:xapsd:/var/lib/xapsd:/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nxapsd:x:200:\n")
    install_standin(root, "openrc-run", "/sbin/openrc-run")
    (root / "etc/init.d").mkdir(parents=True)
    (root / "etc/conf.d").mkdir(parents=True)
    shutil.copy(ROOT / "init.d/xapsd", root / "etc/init.d/xapsd")
    os.chmod(root / "etc/init.d/xapsd", 0o755)
    (root / "etc/conf.d/xapsd").write_text(confd if confd is not None
                                           else (ROOT / "init.d/xapsd.confd").read_text())
    return root


def check_openrc(c: Checks, label: str, confd: str | None, want_json: str, want_calls: str,
                 ask_daemon: bool = False) -> None:
    root = openrc_root(confd)
    try:
        r = run_in_root(root, "/etc/init.d/xapsd start", {"OPENRC_LOG": "/tmp/openrc.log"})
        c.equal(r.returncode, 0, f"openrc {label}: start_pre succeeds")
        log = root / "tmp/openrc.log"
        c.equal(log.read_text() if log.exists() else "", want_calls,
                f"openrc {label}: exact checkpath calls and daemon command")
        conf = root / "run/xapsd/xapsd.json"
        got = conf.read_text() if conf.exists() else None
        c.equal(got, want_json, f"openrc {label}: exact generated JSON")
        try:
            json.loads(got or "")
            c.check(True, f"openrc {label}: JSON parses")
        except ValueError as e:
            c.check(False, f"openrc {label}: JSON parses", e)
        if ask_daemon:
            daemon_accepts(c, f"openrc {label}", conf)
        if conf.exists():
            st = conf.stat()
            c.equal(oct(st.st_mode & 0o7777), oct(0o600), f"openrc {label}: config mode 0600")
            c.equal((st.st_uid, st.st_gid), (200, 200), f"openrc {label}: config owned by xapsd")
        log.unlink(missing_ok=True)
        run_in_root(root, "/etc/init.d/xapsd depend", {"OPENRC_LOG": "/tmp/openrc.log"})
        c.equal(log.read_text() if log.exists() else "", "need net\nuse dns logger\nafter dovecot\n",
                f"openrc {label}: depend()")
    finally:
        shutil.rmtree(root)


def daemon_keys() -> list[str]:
    """The config keys the daemon knows: the KEYS table in src/config.rs."""
    text = (ROOT / "src/config.rs").read_text()
    m = re.search(r"pub const KEYS: &\[\(&str, &str\)\] = &\[(.*?)\n\];", text, re.S)
    return re.findall(r'^\s*\("(\w+)",', m.group(1), re.M) if m else []


def check_every_key(c: Checks) -> None:
    keys = daemon_keys()
    if not c.check(len(keys) >= 9, "found the daemon's config keys (KEYS in src/config.rs)", keys):
        return
    procd = (ROOT / "openwrt/files/xapsd.init").read_text()
    openrc = (ROOT / "init.d/xapsd").read_text()
    uci = (ROOT / "openwrt/files/xapsd.config").read_text()
    confd = (ROOT / "init.d/xapsd.confd").read_text()
    table = re.compile(r"^\t(\w+):(?:str|int|bool|list)$", re.M)
    c.equal(sorted(table.findall(procd)), sorted(keys), "procd option table has every daemon key")
    c.equal(sorted(table.findall(openrc)), sorted(keys), "OpenRC option table has every daemon key")
    c.equal([k for k in keys if not re.search(rf"^\t#?(option|list) {k} ", uci, re.M)], [],
            "/etc/config/xapsd shows every daemon key")
    c.equal([k for k in keys if not re.search(rf"^#?{k}=", confd, re.M)], [],
            "/etc/conf.d/xapsd shows every daemon key")


def main() -> int:
    c = Checks()
    check_every_key(c)
    check_procd(c, "sample config", SAMPLE_UCI, SAMPLE_JSON, PROCD_CALLS, "/mnt/usb/xapsd")
    check_procd(c, "shipped config", (ROOT / "openwrt/files/xapsd.config").read_text(),
                DEFAULT_JSON, PROCD_CALLS, "/etc/xapsd", ask_daemon=True)
    triggers_only = "add_reload_trigger [xapsd]\n"
    check_procd(c, "disabled", SAMPLE_UCI.replace("enabled '1'", "enabled '0'"), None, triggers_only, None)
    check_procd(c, "bad number", SAMPLE_UCI.replace("'10'", "'10s'"), None, triggers_only, None,
                want_rc=1)
    check_openrc(c, "sample conf.d", SAMPLE_CONFD, SAMPLE_CONFD_JSON, OPENRC_CALLS)
    check_openrc(c, "shipped conf.d", None, "{\n\n}\n", OPENRC_DEFAULT_CALLS, ask_daemon=True)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

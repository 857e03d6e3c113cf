#!/usr/bin/env python3
"""Check the structure of the packages packaging/build.sh wrote.

  check_packages.py <rust-target> <out-dir>

Unpacks each .ipk and .apk with tar/gzip and checks it against
packaging/xapsd.pkg.toml: every control field, apk's datahash and the
per-file APK-TOOLS.checksum.SHA1 pax headers, no pax headers inside an ipk,
file modes and owners 0/0, conffiles present in the data.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
from pathlib import Path

from pkgtest import Checks, declaration, find_packages, gunzip, gzip_members, raw_tar_headers, tar_members, ROOT

IPK_FIELDS = ["Package", "Version", "Depends", "Source", "License", "Section",
              "Maintainer", "Architecture", "Installed-Size", "Description"]
PKGINFO_FIELDS = ["pkgname", "pkgver", "pkgdesc", "url", "arch", "license", "size", "datahash"]


def expected_files(flavor: dict, binary: bytes) -> dict[str, tuple[int, bytes]]:
    files = {}
    for spec in flavor["files"]:
        data = binary if spec["from"] == "@binary" else (ROOT / spec["from"]).read_bytes()
        files[spec["path"]] = (int(spec["mode"], 8), data)
    return files


def check_owners_modes(c: Checks, label: str, members: dict, want: dict[str, tuple[int, bytes]],
                       prefix: str) -> None:
    got_files = {"/" + n[len(prefix):] if n.startswith(prefix) else "/" + n: (ti, data)
                 for n, (ti, data) in members.items() if ti.isfile()}
    c.equal(sorted(got_files), sorted(want), f"{label}: data holds exactly the declared files")
    for path, (mode, data) in want.items():
        if path not in got_files:
            continue
        ti, content = got_files[path]
        c.equal(oct(ti.mode), oct(mode), f"{label}: {path} mode")
        c.check(content == data, f"{label}: {path} content is the declared file")
    bad_owner = [n for n, (ti, _) in members.items() if ti.uid != 0 or ti.gid != 0]
    c.equal(bad_owner, [], f"{label}: every entry owned by 0/0")
    bad_dirs = [n for n, (ti, _) in members.items() if ti.isdir() and ti.mode != 0o755]
    c.equal(bad_dirs, [], f"{label}: directories are 0755")


def no_pax(c: Checks, label: str, data: bytes) -> None:
    heads = raw_tar_headers(data)
    pax = [h["name"] for h in heads if not h.get("end") and h["type"] in (b"x", b"g")]
    c.equal(pax, [], f"{label}: no pax headers")
    magics = {h["magic"] for h in heads if not h.get("end")}
    c.check(magics <= {b"ustar  \0", b"ustar\x0000"}, f"{label}: GNU or ustar headers", magics)


def check_ipk(c: Checks, path: Path, decl: dict, target: str, binary: bytes) -> None:
    pkg, flavor = decl["package"], decl["flavor"]["openwrt"]
    arch = decl["targets"][target]["openwrt"]
    label = path.name
    blob = path.read_bytes()
    c.check(blob[:2] == b"\x1f\x8b", f"{label}: outer is gzip (not ar)")
    outer_tar = gunzip(blob)
    no_pax(c, f"{label} outer tar", outer_tar)
    outer = tar_members(outer_tar)
    c.equal(list(outer), ["./debian-binary", "./data.tar.gz", "./control.tar.gz"],
            f"{label}: outer members")
    c.equal(outer["./debian-binary"][1], b"2.0\n", f"{label}: debian-binary")

    control_tar = gunzip(outer["./control.tar.gz"][1])
    data_tar = gunzip(outer["./data.tar.gz"][1])
    no_pax(c, f"{label} control.tar.gz", control_tar)
    no_pax(c, f"{label} data.tar.gz", data_tar)

    control = tar_members(control_tar)
    c.equal(sorted(control), sorted([".", "./control", "./conffiles", "./postinst", "./prerm"]),
            f"{label}: control.tar.gz members")
    fields = {}
    for line in control["./control"][1].decode().splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    for f in IPK_FIELDS:
        c.check(bool(fields.get(f)), f"{label}: control has {f}", fields.get(f))
    c.equal(fields.get("Package"), pkg["name"], f"{label}: Package")
    c.equal(fields.get("Version"), f"{pkg['version']}-{flavor['release']}", f"{label}: Version")
    c.equal(fields.get("Architecture"), arch, f"{label}: Architecture is OpenWrt's name")
    c.equal(fields.get("Depends"), ", ".join(flavor["depends"]), f"{label}: Depends")
    c.equal(fields.get("License"), pkg["license"], f"{label}: License")
    c.equal(fields.get("Section"), pkg["section"], f"{label}: Section")
    c.equal(fields.get("Maintainer"), pkg["maintainer"], f"{label}: Maintainer")
    c.equal(fields.get("Require-User"), f"{flavor['user']}:{flavor['group']}", f"{label}: Require-User")
    want = expected_files(flavor, binary)
    c.equal(fields.get("Installed-Size"), str(sum(len(d) for _, d in want.values())),
            f"{label}: Installed-Size is the files' bytes")
    c.check(path.name == f"{pkg['name']}_{fields.get('Version')}_{arch}.ipk", f"{label}: file name")

    conffiles = control["./conffiles"][1].decode().split()
    want_conf = [f["path"] for f in flavor["files"] if f.get("conffile")]
    c.equal(conffiles, want_conf, f"{label}: conffiles")
    data = tar_members(data_tar)
    for cf in conffiles:
        c.check("." + cf in data, f"{label}: conffile {cf} is in data.tar.gz")
    c.check("/etc/config/xapsd" in conffiles, f"{label}: /etc/config/xapsd is a conffile")

    for script, call in (("./postinst", 'default_postinst "$0" "$@"'), ("./prerm", 'default_prerm "$0" "$@"')):
        ti, text = control[script]
        c.equal(oct(ti.mode), oct(0o755), f"{label}: {script} mode")
        body = text.decode()
        c.check(body.startswith("#!/bin/sh\n") and ". \"${IPKG_INSTROOT}/lib/functions.sh\"" in body
                and call in body, f"{label}: {script} in OpenWrt's style")
    c.equal(oct(control["./control"][0].mode), oct(0o644), f"{label}: control mode")
    check_owners_modes(c, label, data, want, "./")
    c.check(data.get(".") is not None, f"{label}: data.tar.gz starts at ./")


def check_apk(c: Checks, path: Path, decl: dict, target: str, binary: bytes, flavor_name: str) -> None:
    pkg, flavor = decl["package"], decl["flavor"][flavor_name]
    arch = decl["targets"][target][flavor_name]
    label = f"{flavor_name}/{path.name}"
    streams = gzip_members(path.read_bytes())
    c.equal(len(streams), 2, f"{label}: two gzip streams (control, data; unsigned)")
    if len(streams) != 2:
        return
    control_raw, data_raw = gunzip(streams[0]), gunzip(streams[1])

    heads = raw_tar_headers(control_raw)
    c.check(not any(h.get("end") for h in heads) and len(control_raw) % 512 == 0,
            f"{label}: control tar is cut before its end-of-archive blocks")
    control = tar_members(control_raw + b"\0" * 1024)
    names = list(control)
    c.equal(names[0] if names else None, ".PKGINFO", f"{label}: .PKGINFO comes first")

    info: dict[str, list[str]] = {}
    for line in control[".PKGINFO"][1].decode().splitlines():
        if line.startswith("#") or " = " not in line:
            continue
        k, v = line.split(" = ", 1)
        info.setdefault(k, []).append(v)
    for f in PKGINFO_FIELDS:
        c.check(bool(info.get(f)), f"{label}: .PKGINFO has {f}")
    one = {k: v[0] for k, v in info.items()}
    c.equal(one.get("pkgname"), pkg["name"], f"{label}: pkgname")
    c.equal(one.get("pkgver"), f"{pkg['version']}-r{flavor['release']}", f"{label}: pkgver")
    c.equal(one.get("arch"), arch, f"{label}: arch")
    c.equal(one.get("license"), pkg["license"], f"{label}: license")
    c.equal(one.get("datahash"), hashlib.sha256(streams[1]).hexdigest(),
            f"{label}: datahash is the SHA-256 of the data stream")
    want_dep = list(flavor.get("depends", []))
    if flavor.get("scripts") and "/bin/sh" not in want_dep:
        want_dep.append("/bin/sh")
    c.equal(info.get("depend", []), want_dep, f"{label}: depend")

    data = tar_members(data_raw)
    want = expected_files(flavor, binary)
    if flavor_name == "openwrt":
        base = f"/lib/apk/packages/{pkg['name']}"
        for extra in (".list", ".rusers", ".conffiles", ".conffiles_static"):
            c.check(base[1:] + extra in data, f"{label}: has {base}{extra}")
            if base[1:] + extra in data:
                ti, content = data[base[1:] + extra]
                want[base + extra] = (0o644, content)
        listing = data.get(base[1:] + ".list", (None, b""))[1].decode().split()
        c.equal(listing, sorted(want), f"{label}: {base}.list names every file")
        static = data.get(base[1:] + ".conffiles_static", (None, b""))[1].decode().split()
        if len(static) == 2:
            c.equal(static[1], hashlib.sha256(want[static[0]][1]).hexdigest(),
                    f"{label}: conffiles_static checksum")
        c.equal(data.get(base[1:] + ".rusers", (None, b""))[1].decode().strip(),
                f"{flavor['user']}:{flavor['group']}", f"{label}: rusers")
    c.equal(int(one.get("size", -1)), sum(len(d) for _, d in want.values()),
            f"{label}: size is the files' bytes")

    missing_sum = []
    wrong_sum = []
    for name, (ti, content) in data.items():
        if not ti.isfile():
            continue
        got = ti.pax_headers.get("APK-TOOLS.checksum.SHA1")
        if got is None:
            missing_sum.append(name)
        elif got != hashlib.sha1(content).hexdigest():
            wrong_sum.append(name)
    c.equal(missing_sum, [], f"{label}: every file has an APK-TOOLS.checksum.SHA1 pax header")
    c.equal(wrong_sum, [], f"{label}: every APK-TOOLS.checksum.SHA1 matches its file")
    check_owners_modes(c, label, data, want, "")

    for cf in (f["path"] for f in flavor["files"] if f.get("conffile")):
        c.check(cf.lstrip("/") in data, f"{label}: conffile {cf} is in the data")

    if flavor_name == "alpine":
        for script, src in flavor.get("scripts", {}).items():
            entry = control.get("." + script)
            c.check(entry is not None and entry[1] == (ROOT / src).read_bytes(),
                    f"{label}: .{script} is {src}")
        c.check(".pre-install" in control, f"{label}: has .pre-install")
    else:
        for script in (".post-install", ".post-upgrade", ".pre-deinstall"):
            entry = control.get(script)
            c.check(entry is not None and b'. "${IPKG_INSTROOT}/lib/functions.sh"' in entry[1]
                    and f'pkgname="{pkg["name"]}"'.encode() in entry[1],
                    f"{label}: {script} in OpenWrt 25's style")
    for name, (ti, _) in control.items():
        if name.startswith(".") and name != ".PKGINFO":
            c.equal(oct(ti.mode), oct(0o755), f"{label}: {name} mode")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    target, out = sys.argv[1], Path(sys.argv[2])
    decl = declaration()
    c = Checks()
    if not c.check(target in decl["targets"], f"{target} is declared"):
        return c.finish()
    binary = (out / "xapsd").read_bytes()
    found = find_packages(out)
    c.check("ipk" in found, f"{target}: an .ipk was built")
    c.check("openwrt-apk" in found, f"{target}: an OpenWrt .apk was built")
    want_alpine = "alpine" in decl["targets"][target]
    c.equal("alpine-apk" in found, want_alpine, f"{target}: an Alpine .apk exactly when Alpine has the arch")
    if "ipk" in found:
        check_ipk(c, found["ipk"], decl, target, binary)
    if "openwrt-apk" in found:
        check_apk(c, found["openwrt-apk"], decl, target, binary, "openwrt")
    if "alpine-apk" in found:
        check_apk(c, found["alpine-apk"], decl, target, binary, "alpine")
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

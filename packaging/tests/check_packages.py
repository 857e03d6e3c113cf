#!/usr/bin/env python3
"""Check the structure of the packages packaging/build.sh wrote.

  check_packages.py <rust-target> <out-dir>

Unpacks each .ipk and .apk with tar/gzip and checks it against
packaging/xapsd.pkg.toml: every control field, apk's datahash and the
per-file APK-TOOLS.checksum.SHA1 pax headers, no pax headers inside an ipk,
file modes and owners 0/0, conffiles present in the data.
The .deb is read with dpkg-deb (-f, -I, -c, --fsys-tarfile): fields,
control members, conffiles, md5sums, changelog and copyright. The .spk:
its members, INFO keys, icon sizes, conf/ JSON, package.tgz. The OCI
layer: files, owners, the image user's passwd entry.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from pkgtest import Checks, declaration, find_packages, gunzip, gzip_members, raw_tar_headers, tar_members, ROOT
import icons  # noqa: E402 (packaging/, on the path through pkgtest)
import mkpkg  # noqa: E402

IPK_FIELDS = ["Package", "Version", "Depends", "Source", "License", "Section",
              "Maintainer", "Architecture", "Installed-Size", "Description"]
PKGINFO_FIELDS = ["pkgname", "pkgver", "pkgdesc", "url", "arch", "license", "size", "datahash"]


def expected_files(flavor: dict, binary: bytes) -> dict[str, tuple[int, bytes]]:
    """Declared regular files: path -> (mode, content before any gzip)."""
    files = {}
    for spec in flavor["files"]:
        if spec.get("dir"):
            continue
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


# ---------------------------------------------------------------- Debian

DEB_FIELDS = ["Package", "Version", "Architecture", "Maintainer", "Installed-Size", "Depends",
              "Section", "Priority", "Homepage", "Description"]


def dpkg_deb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dpkg-deb", *args], capture_output=True)


def check_deb(c: Checks, path: Path, decl: dict, target: str, binary: bytes) -> None:
    pkg, flavor = decl["package"], decl["flavor"]["debian"]
    arch = decl["targets"][target]["debian"]
    label = path.name
    version = mkpkg.deb_version(pkg, flavor)
    c.equal(label, f"{pkg['name']}_{version.split(':', 1)[-1]}_{arch}.deb", f"{label}: file name")

    r = dpkg_deb("-f", str(path))
    if not c.check(r.returncode == 0, f"{label}: dpkg-deb -f reads it", r.stderr.decode()):
        return
    fields: dict[str, str] = {}
    key = ""
    for line in r.stdout.decode().splitlines():
        if line.startswith(" ") and key:
            fields[key] += "\n" + line
        else:
            key, _, value = line.partition(": ")
            fields[key] = value
    for f in DEB_FIELDS:
        c.check(bool(fields.get(f)), f"{label}: control has {f}")
    c.equal(fields.get("Package"), pkg["name"], f"{label}: Package")
    c.equal(fields.get("Version"), version, f"{label}: Version is epoch:Cargo version (native)")
    c.check(version.startswith(f"{flavor['epoch']}:") and "-" not in version,
            f"{label}: epoch {flavor['epoch']}, no Debian revision", version)
    c.equal(fields.get("Architecture"), arch, f"{label}: Architecture is Debian's name")
    c.equal(fields.get("Depends"), "adduser", f"{label}: Depends: adduser")
    c.equal(fields.get("Section"), "mail", f"{label}: Section: mail")
    c.equal(fields.get("Priority"), "optional", f"{label}: Priority: optional")
    c.equal(fields.get("Homepage"), pkg["url"], f"{label}: Homepage")
    c.equal(fields.get("Maintainer"), pkg["maintainer"], f"{label}: Maintainer")
    desc = fields.get("Description", "").split("\n")
    c.equal(desc[0], pkg["description"], f"{label}: Description synopsis")
    c.check(len(desc) >= 3 and all(line.startswith(" ") and len(line) <= 80 for line in desc[1:]),
            f"{label}: Description has an extended part (indented lines of at most 80)", desc)

    r = dpkg_deb("-I", str(path))
    info = r.stdout.decode()
    members = re.findall(r"^\s+\d+ bytes,\s+\d+ lines\s+(\*?)\s+(\S+)", info, re.M)
    c.equal(sorted(name for _, name in members),
            ["conffiles", "control", "md5sums", "postinst", "postrm", "prerm"],
            f"{label}: dpkg-deb -I lists the control members")
    c.equal(sorted(name for star, name in members if star), ["postinst", "postrm", "prerm"],
            f"{label}: the maintainer scripts are executable")

    ctrl = tar_members(dpkg_deb("--ctrl-tarfile", str(path)).stdout)
    conffiles = ctrl.get("./conffiles", (None, b""))[1].decode().split()
    c.equal(conffiles, ["/etc/xapsd/xapsd.json"], f"{label}: conffiles is /etc/xapsd/xapsd.json")
    for name, src in flavor["scripts"].items():
        got = ctrl.get("./" + name, (None, None))[1]
        c.check(got == (ROOT / src).read_bytes(), f"{label}: {name} is {src}")

    # dpkg-deb -c: "perms owner/group size date time ./path"
    r = dpkg_deb("-c", str(path))
    listing = [line.split(None, 5) for line in r.stdout.decode().splitlines()]
    owners = {parts[1] for parts in listing}
    c.equal(owners, {"root/root"}, f"{label}: dpkg-deb -c: everything root/root")
    listed = {parts[5].lstrip(".").rstrip("/") or "/": parts[0] for parts in listing}
    want = expected_files(flavor, binary)
    regular = sorted(p for p, perms in listed.items() if perms.startswith("-"))
    c.equal(regular, sorted(want), f"{label}: dpkg-deb -c: exactly the declared files")
    for p, (mode, _) in want.items():
        c.equal(listed.get(p), stat.filemode(mode | stat.S_IFREG), f"{label}: {p} mode")
    for p in ("/usr/bin/xapsd", "/lib/systemd/system/xapsd.service", "/etc/xapsd/xapsd.json",
              "/usr/share/doc/xapsd/copyright", "/usr/share/doc/xapsd/changelog.gz",
              "/usr/share/lintian/overrides/xapsd"):
        c.check(p in listed, f"{label}: ships {p}")
    dirs = [p for p, perms in listed.items() if perms.startswith("d") and perms != "drwxr-xr-x"]
    c.equal(dirs, [], f"{label}: directories are 0755")

    data = tar_members(dpkg_deb("--fsys-tarfile", str(path)).stdout)
    content = {n.lstrip(".") : d for n, (ti, d) in data.items() if ti.isfile()}
    for p, (_, src) in want.items():
        spec = next(f for f in flavor["files"] if f["path"] == p)
        got = content.get(p, b"")
        if spec.get("gzip"):
            c.check(got[:2] == b"\x1f\x8b" and gzip.decompress(got) == src and got[3] & 0x08 == 0
                    and got[4:8] == bytes(4),
                    f"{label}: {p} is {spec['from']}, gzip'd without a file name or time")
        else:
            c.check(got == src, f"{label}: {p} is {spec['from']}")
    sums = ctrl.get("./md5sums", (None, b""))[1].decode().splitlines()
    listed_sums = dict(reversed(line.split("  ", 1)) for line in sums)
    c.equal(sorted("/" + p for p in listed_sums), sorted(p for p in content if p not in conffiles),
            f"{label}: md5sums names every file but the conffiles")
    bad = [p for p, md5 in listed_sums.items() if hashlib.md5(content.get("/" + p, b"")).hexdigest() != md5]
    c.equal(bad, [], f"{label}: md5sums match")
    installed = sum((len(d) + 1023) // 1024 for d in content.values()) + sum(
        1 for p, perms in listed.items() if perms.startswith("d") and p != "/")
    c.equal(fields.get("Installed-Size"), str(installed), f"{label}: Installed-Size (KiB, dpkg-gencontrol's count)")

    changelog_gz = content.get("/usr/share/doc/xapsd/changelog.gz")
    changelog = gzip.decompress(changelog_gz) if changelog_gz else b""
    top = changelog.decode().split("\n", 1)[0]
    c.check(top.startswith(f"{pkg['name']} ({version}) "),
            f"{label}: changelog's newest entry is this version (native: changelog.gz)", top)
    copyright = content.get("/usr/share/doc/xapsd/copyright", b"").decode()
    c.check(copyright.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"),
            f"{label}: copyright is DEP-5")
    for lic in ("Expat", "Apache-2.0"):
        c.check(f"\nLicense: {lic}\n" in copyright, f"{label}: copyright has a License: {lic} paragraph")
    c.check("\nFiles: *\n" in copyright, f"{label}: copyright has a Files: * paragraph")
    override = content.get("/usr/share/lintian/overrides/xapsd", b"").decode()
    c.check("xapsd: statically-linked-binary [usr/bin/xapsd]" in override,
            f"{label}: lintian override for the static binary")
    unit = content.get("/lib/systemd/system/xapsd.service", b"").decode()
    c.check("User=xapsd" in unit and "ExecStart=/usr/bin/xapsd run --config /etc/xapsd/xapsd.json" in unit,
            f"{label}: the unit runs /usr/bin/xapsd with /etc/xapsd/xapsd.json as xapsd")
    postinst = ctrl.get("./postinst", (None, b""))[1].decode()
    for what, needle in (("makes the user with adduser --system --group", "adduser --system --group"),
                         ("starts only where systemd runs", "[ -d /run/systemd/system ]"),
                         ("enables with deb-systemd-helper", "deb-systemd-helper enable xapsd.service"),
                         ("points at import-go for a Go database.json", "xapsd import-go")):
        c.check(needle in postinst, f"{label}: postinst {what}")
    postrm = ctrl.get("./postrm", (None, b""))[1].decode()
    c.check('"$1" = purge' in postrm and "rm -rf /var/lib/xapsd" in postrm,
            f"{label}: postrm purge removes /var/lib/xapsd")


# ---------------------------------------------------------------- Synology

SPK_INFO_KEYS = ["package", "version", "os_min_ver", "description", "arch", "maintainer",
                 "displayname", "thirdparty"]


def parse_info(text: str) -> dict[str, str]:
    info = {}
    for line in text.splitlines():
        m = re.fullmatch(r'([a-z_0-9]+)="((?:[^"\\]|\\.)*)"', line)
        if m:
            info[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
        elif line.strip():
            info.setdefault("?bad", line)
    return info


def check_spk(c: Checks, path: Path, decl: dict, target: str, binary: bytes) -> None:
    pkg, flavor = decl["package"], decl["flavor"]["synology"]
    arch = decl["targets"][target]["synology"]
    label = path.name
    blob = path.read_bytes()
    c.check(blob[:2] != b"\x1f\x8b" and blob[257:262] == b"ustar", f"{label}: an uncompressed tar")
    members = tar_members(blob)
    scripts = sorted(flavor["scripts"])
    want = (["INFO", "package.tgz", "scripts", "conf", "PACKAGE_ICON.PNG", "PACKAGE_ICON_256.PNG"]
            + [f"scripts/{s}" for s in scripts] + [f"conf/{k}" for k in flavor["conf"]])
    c.equal(sorted(members), sorted(want), f"{label}: members")
    for s in ("start-stop-status", "preinst", "postinst", "preuninst", "postuninst", "preupgrade", "postupgrade"):
        ti = members.get(f"scripts/{s}", (None, None))[0]
        c.check(ti is not None and ti.mode == 0o755, f"{label}: scripts/{s} is there, 0755")
    for n, (ti, _) in members.items():
        c.check(ti.uid == 0 and ti.gid == 0, f"{label}: {n} owned by 0/0")

    info = parse_info(members["INFO"][1].decode())
    c.check("?bad" not in info, f"{label}: every INFO line is key=\"value\"", info.get("?bad"))
    for k in SPK_INFO_KEYS:
        c.check(bool(info.get(k)), f"{label}: INFO has {k}")
    c.equal(info.get("package"), pkg["name"], f"{label}: INFO package")
    c.check(re.fullmatch(r"\d+\.\d+\.\d+-\d+", info.get("version", "")) is not None
            and info["version"].startswith(pkg["version"].split("-")[0] + "-"),
            f"{label}: INFO version is X.Y.Z-BUILD of Cargo's", info.get("version"))
    c.equal(info.get("os_min_ver"), "7.0-40000", f"{label}: INFO os_min_ver 7.0-40000")
    c.equal(info.get("arch"), arch, f"{label}: INFO arch is Synology's name")
    c.equal(info.get("thirdparty"), "yes", f"{label}: INFO thirdparty")
    c.equal(info.get("checksum"), hashlib.md5(members["package.tgz"][1]).hexdigest(),
            f"{label}: INFO checksum is package.tgz's MD5")
    c.equal(label, f"{pkg['name']}-{info.get('version')}-{arch}.spk", f"{label}: file name")

    for name, size in (("PACKAGE_ICON.PNG", 64), ("PACKAGE_ICON_256.PNG", 256)):
        try:
            got = icons.png_size(members[name][1])
        except ValueError as e:
            got = str(e)
        c.equal(got, (size, size), f"{label}: {name} is a {size}x{size} PNG")

    conf = {}
    for k in flavor["conf"]:
        try:
            conf[k] = json.loads(members[f"conf/{k}"][1])
            c.check(True, f"{label}: conf/{k} is JSON")
        except ValueError as e:
            c.check(False, f"{label}: conf/{k} is JSON", e)
    c.equal(conf.get("privilege", {}).get("defaults", {}).get("run-as"), "package",
            f"{label}: conf/privilege runs as the package user")

    tgz = members["package.tgz"][1]
    c.check(tgz[:2] == b"\x1f\x8b", f"{label}: package.tgz is gzip")
    inner = tar_members(gunzip(tgz))
    c.equal(sorted(n for n, (ti, _) in inner.items() if ti.isfile()), ["bin/xapsd"],
            f"{label}: package.tgz holds bin/xapsd")
    ti, content = inner.get("bin/xapsd", (None, None))
    c.check(content == binary and ti.mode == 0o755, f"{label}: bin/xapsd is the binary, 0755")
    linked = conf.get("resource", {}).get("usr-local-linker", {}).get("bin", [])
    c.check(all(p in inner for p in linked) and linked, f"{label}: usr-local-linker names files of package.tgz", linked)
    c.equal(int(info.get("extractsize", "-1")), (len(binary) + 1023) // 1024, f"{label}: INFO extractsize (KiB)")


# ---------------------------------------------------------------- OCI

def check_oci_layer(c: Checks, path: Path, decl: dict, target: str, binary: bytes) -> None:
    flavor = decl["flavor"]["oci"]
    arch = decl["targets"][target]["oci"]
    label = path.name
    c.equal(label, f"xapsd-layer-{arch}.tar", f"{label}: file name")
    members = tar_members(path.read_bytes())
    want = expected_files(flavor, binary)
    files = {"/" + n: (ti, d) for n, (ti, d) in members.items() if ti.isfile()}
    c.equal(sorted(files), sorted(want), f"{label}: exactly the declared files")
    for p, (mode, data) in want.items():
        ti, got = files.get(p, (None, None))
        c.check(ti is not None and ti.mode == mode and ti.uid == 0 and got == data,
                f"{label}: {p} is {oct(mode)}, root's, the declared content")
    uid, gid = (int(x) for x in flavor["user"].split(":"))
    ti = members.get("data", (None, None))[0]
    c.check(ti is not None and ti.isdir() and (ti.uid, ti.gid, ti.mode) == (uid, gid, 0o700),
            f"{label}: /data is a 0700 folder of {uid}:{gid}")
    passwd = files.get("/etc/passwd", (None, b""))[1].decode()
    c.check(f"xapsd:x:{uid}:{gid}:" in passwd, f"{label}: /etc/passwd names the image user {uid} xapsd")
    c.check(not any(n.startswith(("/", "./")) for n in members), f"{label}: relative member names")


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
    for kind, flavor in (("deb", "debian"), ("spk", "synology"), ("oci-layer", "oci")):
        wanted = flavor in decl["targets"][target]
        c.equal(kind in found, wanted, f"{target}: a {kind} exactly when {flavor} has the arch")
    if "deb" in found:
        check_deb(c, found["deb"], decl, target, binary)
    if "spk" in found:
        check_spk(c, found["spk"], decl, target, binary)
    if "oci-layer" in found:
        check_oci_layer(c, found["oci-layer"], decl, target, binary)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

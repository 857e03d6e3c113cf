#!/usr/bin/env python3
"""Build xapsd's packages from packaging/xapsd.pkg.toml: .ipk, .apk, .deb, .spk, OCI layer.

Python 3.11 standard library only, so it runs wherever the build does.

  mkpkg.py --target aarch64-unknown-linux-musl --binary path/to/xapsd --out DIR

writes DIR/openwrt/xapsd_<ver>-<rel>_<arch>.ipk and DIR/openwrt/xapsd-<ver>-r<rel>.apk,
and, for targets the distribution has, DIR/alpine/xapsd-<ver>-r<rel>.apk,
DIR/debian/xapsd_<ver>_<arch>.deb, DIR/synology/xapsd-<ver>-<rel>-<arch>.spk and
DIR/oci/xapsd-layer-<arch>.tar (packaging/build-oci.sh makes the image).

Formats, as the package managers read them:
- ipk (opkg, OpenWrt 23.05/24.10): a gzip'd tar (not ar) of ./debian-binary,
  ./data.tar.gz and ./control.tar.gz. The inner tars are GNU format: opkg
  silently skips members that sit behind pax headers.
- apk v2 (Alpine; OpenWrt 25.x's apk-tools 3 still reads it): two gzip
  streams back to back. The first holds a tar of .PKGINFO and the scripts,
  cut before its end-of-archive blocks; the second the data tar, where every
  regular file carries an APK-TOOLS.checksum.SHA1 pax header (apk 3 refuses
  files without one). .PKGINFO's datahash is the SHA-256 of the second
  stream. Unsigned: install with `apk add --allow-untrusted`.
- deb (dpkg, apt): a native Debian package made by dpkg-deb from a staged
  tree with DEBIAN/control, conffiles, md5sums and the maintainer scripts.
  Skipped, with a warning, where dpkg-deb is missing.
- spk (Synology DSM 7): an uncompressed tar of INFO, package.tgz (the files
  under /var/packages/xapsd/target), scripts/, conf/ and the two icons.
- OCI layer: an uncompressed tar of the image's root file system, for
  `umoci raw add-layer`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DECLARATION = ROOT / "packaging" / "xapsd.pkg.toml"


@dataclass
class Entry:
    path: str  # absolute path inside the package, e.g. /usr/bin/xapsd
    mode: int
    data: bytes | None  # None for a directory
    uid: int = 0
    gid: int = 0


def load_declaration(path: Path = DECLARATION) -> dict:
    with open(path, "rb") as f:
        decl = tomllib.load(f)
    with open(ROOT / "Cargo.toml", "rb") as f:
        cargo = tomllib.load(f)["package"]
    pkg = decl["package"]
    pkg.setdefault("version", cargo["version"])
    pkg.setdefault("license", cargo.get("license", "unknown"))
    pkg.setdefault("description", cargo.get("description", pkg["name"]))
    pkg.setdefault("url", cargo.get("repository") or cargo.get("homepage") or "")
    return decl


def source_date_epoch() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return int(env)
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        if out:
            return int(out)
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    return int(time.time())


def file_data(spec: dict, binary: Path) -> bytes | None:
    """What a declared file holds: None for a directory; `gzip = true`
    compresses it (Debian's changelog and man page) with no time in the
    gzip header, as `gzip -n` and lintian want."""
    if spec.get("dir"):
        return None
    data = (binary if spec["from"] == "@binary" else ROOT / spec["from"]).read_bytes()
    return gz(data, 0) if spec.get("gzip") else data


def gather_files(flavor: dict, binary: Path) -> list[Entry]:
    files = []
    for spec in flavor["files"]:
        uid, _, gid = spec.get("owner", "0:0").partition(":")
        files.append(Entry(spec["path"], int(spec["mode"], 8), file_data(spec, binary),
                           int(uid), int(gid or uid)))
    return files


def with_parent_dirs(files: list[Entry]) -> list[Entry]:
    declared = {e.path for e in files}
    dirs = set()
    for e in files:
        parts = e.path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/" + "/".join(parts[:i]))
    entries = [Entry(d, 0o755, None) for d in sorted(dirs - declared)]
    return entries + sorted(files, key=lambda e: e.path)


def tar_bytes(entries: list[Entry], fmt: int, mtime: int, *, root_entry: bool,
              prefix: str | None = None, pax_sha1: bool = False, cut: bool = False) -> bytes:
    """A tar of entries, owned by 0/0 (root), with fixed mtimes.

    root_entry adds "./" first, as ipkg-build's tars have. pax_sha1 gives
    each regular file the APK-TOOLS.checksum.SHA1 pax header. cut drops the
    end-of-archive blocks, as abuild-tar --cut does for apk's control part.
    """
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w", format=fmt)
    if root_entry:
        ti = tarfile.TarInfo("./")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        tar.addfile(ti)
    if prefix is None:
        prefix = "./" if root_entry else ""
    for e in entries:
        name = prefix + e.path.lstrip("/")
        ti = tarfile.TarInfo(name + ("/" if e.data is None and prefix else ""))
        ti.mode, ti.mtime = e.mode, mtime
        ti.uid, ti.gid = e.uid, e.gid
        ti.uname = "root" if e.uid == 0 else ""
        ti.gname = "root" if e.gid == 0 else ""
        if e.data is None:
            ti.type = tarfile.DIRTYPE
            tar.addfile(ti)
        else:
            ti.size = len(e.data)
            if pax_sha1:
                ti.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(e.data).hexdigest()}
            tar.addfile(ti, io.BytesIO(e.data))
    if cut:
        end = tar.offset
        tar.close()
        return buf.getvalue()[:end]
    tar.close()
    return buf.getvalue()


def gz(data: bytes, mtime: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=mtime, filename="") as f:
        f.write(data)
    return out.getvalue()


def installed_size(files: list[Entry]) -> int:
    return sum(len(e.data) for e in files if e.data is not None)


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- OpenWrt

# OpenWrt's own maintainer scripts (include/package-pack.mk), quoted so
# that shellcheck has nothing to say.
OPENWRT_POSTINST = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck disable=SC1091
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
"""

OPENWRT_PRERM = """#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck disable=SC1091
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
"""

# OpenWrt 25.x's apk scripts: functions.sh reads $root and $pkgname.
OPENWRT_APK_POST_INSTALL = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck disable=SC1091
. "${IPKG_INSTROOT}/lib/functions.sh"
export root="${IPKG_INSTROOT}"
export pkgname="@NAME@"
add_group_and_user
default_postinst
"""

OPENWRT_APK_POST_UPGRADE = """#!/bin/sh
export PKG_UPGRADE=1
""" + OPENWRT_APK_POST_INSTALL.split("\n", 1)[1]

OPENWRT_APK_PRE_DEINSTALL = """#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck disable=SC1091
. "${IPKG_INSTROOT}/lib/functions.sh"
export root="${IPKG_INSTROOT}"
export pkgname="@NAME@"
default_prerm
"""


def rusers(flavor: dict) -> str:
    # OpenWrt's USERID syntax: user[=uid]:group[=gid]; no ids = next free.
    return f"{flavor['user']}:{flavor['group']}" if flavor.get("user") else ""


def conffiles(flavor: dict) -> list[str]:
    return [f["path"] for f in flavor["files"] if f.get("conffile")]


def ipk_control(pkg: dict, flavor: dict, arch: str, size: int) -> str:
    fields = [
        ("Package", pkg["name"]),
        ("Version", f"{pkg['version']}-{flavor['release']}"),
        ("Depends", ", ".join(flavor.get("depends", []))),
        ("Source", "feeds/xapsd/" + pkg["name"]),
        ("SourceName", pkg["name"]),
        ("License", pkg["license"]),
        ("Section", pkg["section"]),
        ("Require-User", rusers(flavor)),
        ("URL", pkg["url"]),
        ("Maintainer", pkg["maintainer"]),
        ("Architecture", arch),
        ("Installed-Size", str(size)),
        ("Description", one_line(pkg["description"])),
    ]
    return "".join(f"{k}: {v}\n" for k, v in fields if v)


def build_ipk(pkg: dict, flavor: dict, arch: str, files: list[Entry], mtime: int) -> tuple[str, bytes]:
    data = gz(tar_bytes(with_parent_dirs(files), tarfile.GNU_FORMAT, mtime, root_entry=True), mtime)
    control_files = [
        Entry("/control", 0o644, ipk_control(pkg, flavor, arch, installed_size(files)).encode()),
        Entry("/conffiles", 0o644, "".join(p + "\n" for p in conffiles(flavor)).encode()),
        Entry("/postinst", 0o755, OPENWRT_POSTINST.encode()),
        Entry("/prerm", 0o755, OPENWRT_PRERM.encode()),
    ]
    if not conffiles(flavor):
        control_files = [e for e in control_files if e.path != "/conffiles"]
    control = gz(tar_bytes(control_files, tarfile.GNU_FORMAT, mtime, root_entry=True), mtime)
    outer = [
        Entry("/debian-binary", 0o644, b"2.0\n"),
        Entry("/data.tar.gz", 0o644, data),
        Entry("/control.tar.gz", 0o644, control),
    ]
    # Outer: "./debian-binary ./data.tar.gz ./control.tar.gz", as ipkg-build orders them.
    body = tar_bytes(outer, tarfile.GNU_FORMAT, mtime, root_entry=False, prefix="./")
    name = f"{pkg['name']}_{pkg['version']}-{flavor['release']}_{arch}.ipk"
    return name, gz(body, mtime)


def openwrt_apk_extras(pkg: dict, flavor: dict, files: list[Entry]) -> list[Entry]:
    """The /lib/apk/packages/ files OpenWrt 25.x's functions.sh reads."""
    name = pkg["name"]
    base = f"/lib/apk/packages/{name}"
    listing = sorted(e.path for e in files)
    extras = []
    if rusers(flavor):
        extras.append(Entry(base + ".rusers", 0o644, (rusers(flavor) + "\n").encode()))
    if conffiles(flavor):
        extras.append(Entry(base + ".conffiles", 0o644,
                            "".join(p + "\n" for p in conffiles(flavor)).encode()))
        by_path = {e.path: e for e in files}
        static = "".join(f"{p} {hashlib.sha256(by_path[p].data).hexdigest()}\n"
                         for p in conffiles(flavor))
        extras.append(Entry(base + ".conffiles_static", 0o644, static.encode()))
    listing += [e.path for e in extras] + [base + ".list"]
    extras.append(Entry(base + ".list", 0o644, "".join(p + "\n" for p in sorted(listing)).encode()))
    return extras


def build_apk(pkg: dict, flavor: dict, arch: str, files: list[Entry], scripts: dict[str, bytes],
              mtime: int, version: str, depends: list[str]) -> bytes:
    data = gz(tar_bytes(with_parent_dirs(files), tarfile.PAX_FORMAT, mtime,
                        root_entry=False, pax_sha1=True), mtime)
    info = [
        "# Generated by xapsd packaging/mkpkg.py",
        f"pkgname = {pkg['name']}",
        f"pkgver = {version}",
        f"pkgdesc = {one_line(pkg['description'])}",
        f"url = {pkg['url']}",
        f"builddate = {mtime}",
        f"packager = {pkg['maintainer']}",
        f"size = {installed_size(files)}",
        f"arch = {arch}",
        f"origin = {pkg['name']}",
        f"maintainer = {pkg['maintainer']}",
        f"license = {pkg['license']}",
    ]
    info += [f"depend = {d}" for d in depends]
    info.append(f"datahash = {hashlib.sha256(data).hexdigest()}")
    control_entries = [Entry("/.PKGINFO", 0o644, ("\n".join(info) + "\n").encode())]
    for script in sorted(scripts):
        control_entries.append(Entry("/." + script, 0o755, scripts[script]))
    control = gz(tar_bytes(control_entries, tarfile.USTAR_FORMAT, mtime,
                           root_entry=False, cut=True), mtime)
    return control + data


# ---------------------------------------------------------------- Debian

def deb_version(pkg: dict, flavor: dict) -> str:
    """Native package: [epoch:]upstream, a Cargo pre-release `-rc1` as `~rc1`
    so that it sorts before the release."""
    upstream = pkg["version"].replace("-", "~")
    return f"{flavor['epoch']}:{upstream}" if flavor.get("epoch") else upstream


def deb_installed_size(files: list[Entry]) -> int:
    """KiB, counted as dpkg-gencontrol does: each file rounded up, 1 per directory."""
    return sum((len(e.data) + 1023) // 1024 if e.data is not None else 1 for e in files)


def deb_description(pkg: dict) -> str:
    paragraphs = [one_line(p) for p in pkg.get("long_description", "").strip().split("\n\n") if p.strip()]
    lines = [one_line(pkg["description"])]
    for i, para in enumerate(paragraphs):
        if i:
            lines.append(" .")
        line = ""
        for word in para.split():
            if line and len(line) + 1 + len(word) > 72:
                lines.append(" " + line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        if line:
            lines.append(" " + line)
    return "\n".join(lines)


def deb_control(pkg: dict, flavor: dict, arch: str, files: list[Entry]) -> str:
    fields = [
        ("Package", pkg["name"]),
        ("Version", deb_version(pkg, flavor)),
        ("Architecture", arch),
        ("Maintainer", pkg["maintainer"]),
        ("Installed-Size", str(deb_installed_size(with_parent_dirs(files)))),
        ("Depends", ", ".join(flavor.get("depends", []))),
        ("Section", pkg["section"]),
        ("Priority", flavor.get("priority", "optional")),
        ("Homepage", pkg["url"]),
        ("Description", deb_description(pkg)),
    ]
    return "".join(f"{k}: {v}\n" for k, v in fields if v)


def build_deb(pkg: dict, flavor: dict, arch: str, files: list[Entry], mtime: int) -> tuple[str, bytes] | None:
    """Stage the tree and let dpkg-deb build it (owners root, mtimes clamped
    to SOURCE_DATE_EPOCH, xz)."""
    if shutil.which("dpkg-deb") is None:
        print("mkpkg: dpkg-deb not found, no .deb (apt-get install dpkg)", file=sys.stderr)
        return None
    confs = conffiles(flavor)
    with tempfile.TemporaryDirectory(prefix="xapsd-deb-") as tmp:
        stage = Path(tmp) / "root"
        for e in with_parent_dirs(files):
            path = stage / e.path.lstrip("/")
            if e.data is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(e.data)
            path.chmod(e.mode)
        meta = stage / "DEBIAN"
        meta.mkdir()
        control = [("control", deb_control(pkg, flavor, arch, files).encode(), 0o644)]
        if confs:
            control.append(("conffiles", "".join(c + "\n" for c in confs).encode(), 0o644))
        # md5sums lists the files dpkg checks (debsums); conffiles have their own.
        sums = "".join(f"{hashlib.md5(e.data).hexdigest()}  {e.path.lstrip('/')}\n"
                       for e in sorted(files, key=lambda e: e.path)
                       if e.data is not None and e.path not in confs)
        control.append(("md5sums", sums.encode(), 0o644))
        for name, src in sorted(flavor.get("scripts", {}).items()):
            control.append((name, (ROOT / src).read_bytes(), 0o755))
        for name, data, mode in control:
            (meta / name).write_bytes(data)
            (meta / name).chmod(mode)
        meta.chmod(0o755)
        for path in [stage, *stage.rglob("*")]:
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        name = f"{pkg['name']}_{deb_version(pkg, flavor).split(':', 1)[-1]}_{arch}.deb"
        deb = Path(tmp) / name
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(mtime))
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(deb)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        return name, deb.read_bytes()


# ---------------------------------------------------------------- Synology

def spk_version(pkg: dict, flavor: dict) -> str:
    """DSM's `X.Y.Z-BUILD`: digits only, so a Cargo pre-release is dropped."""
    return f"{pkg['version'].split('-')[0]}-{flavor['release']}"


def spk_info(pkg: dict, flavor: dict, arch: str, package_tgz: bytes, size: int, mtime: int) -> str:
    def quoted(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    description = one_line(pkg.get("long_description") or pkg["description"])
    fields = [
        ("package", pkg["name"]),
        ("version", spk_version(pkg, flavor)),
        ("os_min_ver", flavor["os_min_ver"]),
        ("description", description),
        ("arch", arch),
        ("maintainer", pkg["maintainer"]),
        ("maintainer_url", pkg["url"]),
        ("displayname", flavor.get("displayname", pkg["name"])),
        ("thirdparty", "yes"),
        ("ctl_stop", "yes"),
        ("extractsize", str((size + 1023) // 1024)),
        ("checksum", hashlib.md5(package_tgz).hexdigest()),
        ("create_time", time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(mtime))),
    ]
    return "".join(f"{k}={quoted(v)}\n" for k, v in fields)


def build_spk(pkg: dict, flavor: dict, arch: str, files: list[Entry], mtime: int) -> tuple[str, bytes]:
    import icons  # packaging/icons.py, beside this file

    package_tgz = gz(tar_bytes(with_parent_dirs(files), tarfile.USTAR_FORMAT, mtime,
                               root_entry=False), mtime)
    entries = [
        Entry("/INFO", 0o644, spk_info(pkg, flavor, arch, package_tgz,
                                       installed_size(files), mtime).encode()),
        Entry("/package.tgz", 0o644, package_tgz),
    ]
    entries.append(Entry("/scripts", 0o755, None))
    entries += [Entry(f"/scripts/{k}", 0o755, (ROOT / v).read_bytes())
                for k, v in sorted(flavor["scripts"].items())]
    entries.append(Entry("/conf", 0o755, None))
    entries += [Entry(f"/conf/{k}", 0o644, (ROOT / v).read_bytes())
                for k, v in sorted(flavor["conf"].items())]
    entries += [Entry("/PACKAGE_ICON.PNG", 0o644, icons.png(64)),
                Entry("/PACKAGE_ICON_256.PNG", 0o644, icons.png(256))]
    blob = tar_bytes(entries, tarfile.USTAR_FORMAT, mtime, root_entry=False)
    return f"{pkg['name']}-{spk_version(pkg, flavor)}-{arch}.spk", blob


# ---------------------------------------------------------------- OCI

def build_oci_layer(files: list[Entry], arch: str, mtime: int) -> tuple[str, bytes]:
    """The image's whole root file system as one uncompressed layer tar."""
    blob = tar_bytes(with_parent_dirs(files), tarfile.PAX_FORMAT, mtime, root_entry=False)
    return f"xapsd-layer-{arch}.tar", blob


def build(target: str, binary: Path, out: Path, decl: dict | None = None) -> list[Path]:
    decl = decl or load_declaration()
    pkg = decl["package"]
    if target not in decl["targets"]:
        raise SystemExit(f"mkpkg: no architecture names for {target} in {DECLARATION}")
    arches = decl["targets"][target]
    mtime = source_date_epoch()
    written = []

    def write(sub: str, name: str, blob: bytes) -> None:
        (out / sub).mkdir(parents=True, exist_ok=True)
        path = out / sub / name
        path.write_bytes(blob)
        written.append(path)

    for flavor_name, flavor in decl["flavor"].items():
        arch = arches.get(flavor_name)
        if not arch:
            continue
        files = gather_files(flavor, binary)
        if flavor_name == "debian":
            built = build_deb(pkg, flavor, arch, files, mtime)
            if built:
                write("debian", *built)
        elif flavor_name == "synology":
            write("synology", *build_spk(pkg, flavor, arch, files, mtime))
        elif flavor_name == "oci":
            write("oci", *build_oci_layer(files, arch, mtime))
        elif flavor_name == "openwrt":
            if "ipk" in flavor["formats"]:
                write("openwrt", *build_ipk(pkg, flavor, arch, files, mtime))
            if "apk" in flavor["formats"]:
                version = f"{pkg['version']}-r{flavor['release']}"
                scripts = {
                    "post-install": OPENWRT_APK_POST_INSTALL,
                    "post-upgrade": OPENWRT_APK_POST_UPGRADE,
                    "pre-deinstall": OPENWRT_APK_PRE_DEINSTALL,
                }
                scripts = {k: v.replace("@NAME@", pkg["name"]).encode() for k, v in scripts.items()}
                all_files = files + openwrt_apk_extras(pkg, flavor, files)
                blob = build_apk(pkg, flavor, arch, all_files, scripts, mtime, version,
                                 flavor.get("depends", []))
                write("openwrt", f"{pkg['name']}-{version}.apk", blob)
        else:
            version = f"{pkg['version']}-r{flavor['release']}"
            scripts = {k: (ROOT / v).read_bytes() for k, v in flavor.get("scripts", {}).items()}
            depends = list(flavor.get("depends", []))
            if scripts and "/bin/sh" not in depends:
                depends.append("/bin/sh")  # as abuild adds for packages with scripts
            blob = build_apk(pkg, flavor, arch, files, scripts, mtime, version, depends)
            write(flavor_name, f"{pkg['name']}-{version}.apk", blob)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--target", required=True, help="Rust target triple")
    ap.add_argument("--binary", required=True, type=Path, help="the stripped xapsd binary")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--declaration", type=Path, default=DECLARATION)
    args = ap.parse_args(argv)
    for path in build(args.target, args.binary, args.out, load_declaration(args.declaration)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Every shell script passes `busybox ash -n` and shellcheck.

  check_scripts.py [out-dir ...]

Checks the project's scripts (init scripts, conf.d, maintainer scripts,
build and CI scripts, the tests' stand-ins, the APKBUILD) and, for each
out-dir given, the maintainer scripts inside the packages built there.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pkgtest import ROOT, Checks, find_packages, gunzip, gzip_members, tar_members

SCRIPTS = [
    "packaging/build.sh",
    ".ci/appliance.sh",
    "openwrt/files/xapsd.init",
    "init.d/xapsd",
    "init.d/xapsd.confd",
    "packaging/alpine/xapsd.pre-install",
    "packaging/tests/standins/functions.sh",
    "packaging/tests/standins/procd.sh",
    "packaging/tests/standins/rc.common",
    "packaging/tests/standins/openrc-run",
    "packaging/tests/standins/adduser",
    "packaging/tests/standins/addgroup",
    "packaging/build-oci.sh",
    "packaging/debian/postinst",
    "packaging/debian/prerm",
    "packaging/debian/postrm",
    "packaging/synology/scripts/start-stop-status",
    "packaging/synology/scripts/postinst",
    "packaging/synology/scripts/noop",
]

# abuild sources the APKBUILD: its variables are read there, and $srcdir,
# $pkgdir, $CTARGET come from abuild.
APKBUILD_EXCLUDES = "SC2034,SC2154"


def lint(c: Checks, label: str, path: Path, excludes: str = "") -> None:
    r = subprocess.run(["busybox", "ash", "-n", str(path)], capture_output=True, text=True)
    c.check(r.returncode == 0, f"busybox ash -n {label}", r.stderr.strip())
    cmd = ["shellcheck", "--shell=sh", "--severity=style"]
    if excludes:
        cmd.append(f"--exclude={excludes}")
    r = subprocess.run(cmd + [str(path)], capture_output=True, text=True)
    c.check(r.returncode == 0, f"shellcheck {label}", "\n" + r.stdout.strip())


def package_scripts(out: Path) -> dict[str, bytes]:
    scripts = {}
    for kind, path in find_packages(out).items():
        if kind == "oci-layer":
            continue
        if kind == "deb":
            r = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(path)], capture_output=True, check=True)
            for name, (_, data) in tar_members(r.stdout).items():
                if data is not None and data.startswith(b"#!"):
                    scripts[f"{path.name}:{name[2:]}"] = data
        elif kind == "spk":
            for name, (_, data) in tar_members(path.read_bytes()).items():
                if name.startswith("scripts/") and data is not None:
                    scripts[f"{path.name}:{name}"] = data
        elif kind == "ipk":
            outer = tar_members(gunzip(path.read_bytes()))
            for name, (_, data) in tar_members(gunzip(outer["./control.tar.gz"][1])).items():
                if data is not None and name not in ("./control", "./conffiles"):
                    scripts[f"{path.name}:{name[2:]}"] = data
        else:
            control = tar_members(gunzip(gzip_members(path.read_bytes())[0]) + b"\0" * 1024)
            for name, (_, data) in control.items():
                if name != ".PKGINFO" and data is not None:
                    scripts[f"{kind}/{path.name}:{name}"] = data
    return scripts


def main() -> int:
    c = Checks()
    for rel in SCRIPTS:
        path = ROOT / rel
        if c.check(path.is_file(), f"{rel} exists"):
            lint(c, rel, path)
    lint(c, "packaging/alpine/APKBUILD", ROOT / "packaging/alpine/APKBUILD", APKBUILD_EXCLUDES)
    with tempfile.TemporaryDirectory() as tmp:
        for out in sys.argv[1:]:
            for label, data in package_scripts(Path(out)).items():
                path = Path(tmp) / label.replace("/", "_").replace(":", "_")
                path.write_bytes(data)
                lint(c, label, path)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

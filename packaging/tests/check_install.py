#!/usr/bin/env python3
"""Install each package into a staging root and run its maintainer scripts there.

  check_install.py <rust-target> <out-dir>

Does what opkg and apk do with the files (unpack data, keep the control
files where the scripts look for them) in a throwaway chroot whose /bin/sh
is a static busybox, then runs the package's own scripts:
- .ipk: postinst (makes the xapsd user, enables and starts the procd
  service from the shipped /etc/config/xapsd) and prerm (stops, disables);
- OpenWrt .apk: .post-install and .pre-deinstall, the same way;
- Alpine .apk: .pre-install, twice (an upgrade runs it again);
- Synology .spk, where the binary runs on this machine: package.tgz
  unpacked into a temp $SYNOPKG_PKGDEST, postinst writes the settings into
  a temp $SYNOPKG_PKGVAR, then start-stop-status status (3), start, status
  (0), a register answered, stop, status (3), run as an unprivileged user
  as DSM does.
OpenWrt's functions.sh, rc.common and procd, and busybox's adduser and
addgroup (Debian's static busybox lacks them), are the tests' stand-ins.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pkgtest import (Checks, extract, find_packages, gunzip, gzip_members, install_standin,
                     make_root, run_in_root, tar_members)
from smoke import REGISTER, free_port, post

PROCD_START = "set_param [command] [/usr/bin/xapsd] [run] [--config] [/var/etc/xapsd.json]"


def openwrt_root() -> Path:
    root = make_root()
    install_standin(root, "functions.sh", "/lib/functions.sh", 0o644)
    install_standin(root, "procd.sh", "/lib/functions/procd.sh", 0o644)
    install_standin(root, "rc.common", "/etc/rc.common")
    return root


def check_openwrt_result(c: Checks, label: str, root: Path) -> None:
    passwd = (root / "etc/passwd").read_text()
    group = (root / "etc/group").read_text()
    user = [line for line in passwd.splitlines() if line.startswith("xapsd:")]
    c.equal(len(user), 1, f"{label}: postinst made the xapsd user once")
    c.check(any(line.startswith("xapsd:") for line in group.splitlines()),
            f"{label}: postinst made the xapsd group")
    link = root / "etc/rc.d/S95xapsd"
    c.check(link.is_symlink() and str(link.readlink()) == "../init.d/xapsd",
            f"{label}: service enabled (/etc/rc.d/S95xapsd)")
    log = root / "tmp/procd.log"
    calls = log.read_text() if log.exists() else ""
    c.check(PROCD_START in calls, f"{label}: service started with the daemon command", calls)
    conf = root / "var/etc/xapsd.json"
    c.check(conf.exists() and '"db": "/etc/xapsd/xapsd.redb"' in conf.read_text(),
            f"{label}: JSON config written from the shipped /etc/config/xapsd")
    if user and conf.exists():
        uid = int(user[0].split(":")[2])
        c.equal(conf.stat().st_uid, uid, f"{label}: JSON config owned by xapsd")
        c.equal((root / "etc/xapsd").stat().st_uid, uid, f"{label}: /etc/xapsd owned by xapsd")


def check_ipk(c: Checks, path: Path) -> None:
    label = f"staged {path.name}"
    outer = tar_members(gunzip(path.read_bytes()))
    control = tar_members(gunzip(outer["./control.tar.gz"][1]))
    root = openwrt_root()
    try:
        files = extract(gunzip(outer["./data.tar.gz"][1]), root)
        info = root / "usr/lib/opkg/info"
        info.mkdir(parents=True)
        for name, (ti, data) in control.items():
            if data is not None:
                dest = info / ("xapsd." + name.lstrip("./"))
                dest.write_bytes(data)
                dest.chmod(ti.mode)
        (info / "xapsd.list").write_text("".join(f + "\n" for f in files))
        c.check((root / "etc/config/xapsd").stat().st_mode & 0o777 == 0o600,
                f"{label}: /etc/config/xapsd unpacked 0600")
        run_in_root(root, "/usr/lib/opkg/info/xapsd.postinst", {"PROCD_LOG": "/tmp/procd.log"},
                    c, f"{label}: postinst exits 0")
        check_openwrt_result(c, label, root)
        run_in_root(root, "/usr/lib/opkg/info/xapsd.postinst", {"PROCD_LOG": "/tmp/procd.log",
                                                                "PKG_UPGRADE": "1"},
                    c, f"{label}: postinst again (upgrade) exits 0")
        c.equal((root / "etc/passwd").read_text().count("\nxapsd:"), 1,
                f"{label}: upgrade does not add the user twice")
        run_in_root(root, "/usr/lib/opkg/info/xapsd.prerm", {"PROCD_LOG": "/tmp/procd.log"},
                    c, f"{label}: prerm exits 0")
        c.check(not (root / "etc/rc.d/S95xapsd").exists(), f"{label}: prerm disabled the service")
        c.check("stop [xapsd]" in (root / "tmp/procd.log").read_text(), f"{label}: prerm stopped it")
        # Building an image: opkg runs postinst with IPKG_INSTROOT set.
        image = openwrt_root()
        try:
            extract(gunzip(outer["./data.tar.gz"][1]), image)
            shutil.copytree(info, image / "usr/lib/opkg/info")
            import subprocess
            r = subprocess.run(["/bin/sh", str(image / "usr/lib/opkg/info/xapsd.postinst")],
                               env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "IPKG_INSTROOT": str(image)},
                               capture_output=True, text=True)
            c.equal(r.returncode, 0, f"{label}: postinst with IPKG_INSTROOT (image build) exits 0")
            c.check((image / "etc/rc.d/S95xapsd").is_symlink(),
                    f"{label}: image build enables the service", r.stderr)
            c.check("xapsd:" in (image / "etc/passwd").read_text(),
                    f"{label}: image build adds the user to the image's passwd")
        finally:
            shutil.rmtree(image)
    finally:
        shutil.rmtree(root)


def apk_parts(path: Path) -> tuple[dict, bytes]:
    streams = gzip_members(path.read_bytes())
    control = tar_members(gunzip(streams[0]) + b"\0" * 1024)
    return control, gunzip(streams[1])


def check_openwrt_apk(c: Checks, path: Path) -> None:
    label = f"staged openwrt/{path.name}"
    control, data = apk_parts(path)
    root = openwrt_root()
    try:
        extract(data, root)
        scripts = root / "lib/apk/scripts"
        scripts.mkdir(parents=True)
        for name, (ti, content) in control.items():
            if name != ".PKGINFO" and content is not None:
                (scripts / name.lstrip(".")).write_bytes(content)
                (scripts / name.lstrip(".")).chmod(0o755)
        run_in_root(root, "/lib/apk/scripts/post-install", {"PROCD_LOG": "/tmp/procd.log"},
                    c, f"{label}: .post-install exits 0")
        check_openwrt_result(c, label, root)
        run_in_root(root, "/lib/apk/scripts/post-upgrade", {"PROCD_LOG": "/tmp/procd.log"},
                    c, f"{label}: .post-upgrade exits 0")
        run_in_root(root, "/lib/apk/scripts/pre-deinstall", {"PROCD_LOG": "/tmp/procd.log"},
                    c, f"{label}: .pre-deinstall exits 0")
        c.check(not (root / "etc/rc.d/S95xapsd").exists(), f"{label}: .pre-deinstall disabled the service")
    finally:
        shutil.rmtree(root)


def check_alpine_apk(c: Checks, path: Path) -> None:
    label = f"staged alpine/{path.name}"
    control, data = apk_parts(path)
    root = make_root()
    try:
        install_standin(root, "adduser", "/usr/sbin/adduser")
        install_standin(root, "addgroup", "/usr/sbin/addgroup")
        extract(data, root)
        (root / "tmp/pre-install").write_bytes(control[".pre-install"][1])
        (root / "tmp/pre-install").chmod(0o755)
        for attempt in ("first", "second"):
            run_in_root(root, "/tmp/pre-install", None, c, f"{label}: .pre-install exits 0 ({attempt} run)")
        users = [line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("xapsd:")]
        groups = [line for line in (root / "etc/group").read_text().splitlines() if line.startswith("xapsd:")]
        c.equal(len(users), 1, f"{label}: xapsd user made once")
        c.equal(len(groups), 1, f"{label}: xapsd group made once")
        if users and groups:
            f = users[0].split(":")
            c.check(100 <= int(f[2]) < 1000, f"{label}: system uid", f[2])
            c.equal(f[3], groups[0].split(":")[2], f"{label}: primary group xapsd")
            c.equal(f[5:], ["/var/lib/xapsd", "/sbin/nologin"], f"{label}: home and shell")
        c.check((root / "etc/init.d/xapsd").stat().st_mode & 0o111 != 0, f"{label}: init script executable")
        c.check((root / "etc/conf.d/xapsd").is_file(), f"{label}: conf.d installed")
    finally:
        shutil.rmtree(root)


# Rust targets whose binaries this machine runs without qemu.
NATIVE = {"x86_64": "x86_64-unknown-linux-musl", "aarch64": "aarch64-unknown-linux-musl"}
# DSM runs the scripts as the package user; here: nobody.
NOBODY = 65534


def check_spk(c: Checks, path: Path) -> None:
    label = f"installed {path.name}"
    members = tar_members(path.read_bytes())
    tmp = Path(tempfile.mkdtemp(prefix="xapsd-spk-"))
    try:
        dest, var, scripts = tmp / "target", tmp / "var", tmp / "scripts"
        for d in (dest, var, scripts):
            d.mkdir()
        extract(gunzip(members["package.tgz"][1]), dest)
        for name, (ti, data) in members.items():
            if name.startswith("scripts/") and data is not None:
                (tmp / name).write_bytes(data)
                (tmp / name).chmod(0o755)
        as_root = os.geteuid() == 0
        if as_root:
            os.chmod(tmp, 0o755)
            for p in (var, *var.rglob("*")):
                os.chown(p, NOBODY, NOBODY)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYNOPKG_PKGNAME": "xapsd",
               "SYNOPKG_PKGDEST": str(dest), "SYNOPKG_PKGVAR": str(var)}

        def script(name: str, *args: str) -> subprocess.CompletedProcess:
            cmd = [str(scripts / name), *args]
            if as_root:
                cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"] + cmd
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

        for name in ("preinst", "postinst"):
            r = script(name)
            c.check(r.returncode == 0, f"{label}: {name} exits 0", r.stderr.strip())
        conf_path = var / "xapsd.json"
        try:
            conf = json.loads(conf_path.read_text())
        except (OSError, ValueError) as e:
            conf = {}
            c.check(False, f"{label}: postinst wrote $SYNOPKG_PKGVAR/xapsd.json", e)
        c.equal(conf.get("db"), f"{var}/xapsd.redb", f"{label}: the store is in $SYNOPKG_PKGVAR")
        c.equal(oct(conf_path.stat().st_mode & 0o777) if conf_path.exists() else None, oct(0o600),
                f"{label}: the settings file is 0600")
        c.equal(script("start-stop-status", "status").returncode, 3, f"{label}: status before start is 3")
        conf_path.write_text(json.dumps(dict(conf, no_such_key=1)))
        r = script("start-stop-status", "start")
        c.check(r.returncode == 1 and "not usable" in r.stderr, f"{label}: start refuses unusable settings",
                r.stderr)
        c.equal(script("start-stop-status", "status").returncode, 3, f"{label}: and nothing runs")

        port = free_port()
        conf["listen"] = [f"127.0.0.1:{port}"]
        conf_path.write_text(json.dumps(conf))
        r = script("start-stop-status", "start")
        log = (var / "xapsd.log").read_text() if (var / "xapsd.log").exists() else ""
        c.check(r.returncode == 0, f"{label}: start exits 0", f"{r.stderr.strip()}\n{log[-2000:]}")
        c.equal(script("start-stop-status", "status").returncode, 0, f"{label}: status while running is 0")
        pid = int((var / "xapsd.pid").read_text()) if (var / "xapsd.pid").exists() else 0
        if pid:
            uid = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("Uid:"))
            c.equal(uid, NOBODY if as_root else os.geteuid(), f"{label}: the daemon runs as the package user")
        status, body = post(port, "/register", REGISTER)
        c.equal(status, 200, f"{label}: the started daemon answers a register")
        c.equal(script("start-stop-status", "start").returncode, 0, f"{label}: a second start is a no-op")
        c.equal(script("start-stop-status", "stop").returncode, 0, f"{label}: stop exits 0")
        c.equal(script("start-stop-status", "status").returncode, 3, f"{label}: status after stop is 3")
        c.check(pid and not Path(f"/proc/{pid}").exists(), f"{label}: the daemon is gone after stop")
        c.check((var / "xapsd.redb").exists(), f"{label}: the store was made in $SYNOPKG_PKGVAR")
        r = script("postinst")
        c.check(r.returncode == 0 and json.loads(conf_path.read_text()).get("listen") == conf["listen"],
                f"{label}: postinst again (upgrade) keeps the settings")
        for name in ("preupgrade", "postupgrade", "preuninst", "postuninst"):
            c.equal(script(name).returncode, 0, f"{label}: {name} exits 0")
        c.equal(script("start-stop-status", "stop").returncode, 0, f"{label}: stop when stopped exits 0")
    finally:
        pidfile = tmp / "var" / "xapsd.pid"
        if pidfile.exists():
            subprocess.run(["kill", "-9", pidfile.read_text().strip()], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[2])
    c = Checks()
    found = find_packages(out)
    if c.check("ipk" in found, "an .ipk to install"):
        check_ipk(c, found["ipk"])
    if c.check("openwrt-apk" in found, "an OpenWrt .apk to install"):
        check_openwrt_apk(c, found["openwrt-apk"])
    if "alpine-apk" in found:
        check_alpine_apk(c, found["alpine-apk"])
    if "spk" in found and NATIVE.get(platform.machine()) == sys.argv[1]:
        check_spk(c, found["spk"])
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

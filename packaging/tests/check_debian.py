#!/usr/bin/env python3
"""lintian on every .deb, then a real install of the one this machine runs.

  check_debian.py <deb>...

1. `lintian` over all the packages in one run: no error-level tags (the
   static binary's tag is overridden in the package); every tag is printed.
2. As root, on a Debian machine whose architecture one of the packages has:
   `dpkg -i`, and the result checked: the xapsd system user and group,
   the state folder, the config owned by xapsd 0600 (dpkg-statoverride),
   the unit enabled the way deb-systemd-helper does. Reinstalled over a Go
   daemon's /var/lib/xapsd/database.json, postinst names `xapsd import-go`.
   The daemon started by hand as xapsd on a free loopback port answers a
   register and stores it. `dpkg -r` keeps the config and the user,
   `dpkg --purge` leaves nothing behind: no file, user, group, override,
   unit state or state folder that was not there before.
   A machine that already has xapsd installed, a xapsd user or
   /var/lib/xapsd is left alone (that step fails instead).
3. The upgrade from the Go daemon's package: a stand-in `xapsd 1.2-1`
   (its binary, unit, `/etc/xapsd/xapsd.yaml` conffile, user, and a purge
   script that deletes /var/lib/xapsd) is installed with a database.json,
   then ours: dpkg upgrades it in place, the Go database stays and
   postinst names `xapsd import-go`; purging ours afterwards leaves nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pkgtest import Checks
from smoke import REGISTER, START_TIMEOUT, free_port, post

# Where a package's traces would stay behind: paths naming xapsd.
SCAN = ["/etc", "/lib/systemd", "/usr/lib/systemd", "/usr/bin", "/usr/sbin", "/usr/share/doc",
        "/usr/share/man/man8", "/usr/share/lintian/overrides", "/var/lib", "/run"]
ACCOUNT_FILES = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]
GO_DATABASE = {"Users": {}}
GO_VERSION = "1.2-1"
# The Go daemon's package as a stand-in: what matters for the upgrade is
# its name, files, user, and a purge that deletes the state folder.
GO_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ] && ! getent passwd xapsd > /dev/null; then
	adduser --system --group --quiet --home /var/lib/xapsd xapsd
fi
"""
GO_POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ]; then
	rm -rf /var/lib/xapsd
	deluser --system --quiet xapsd 2> /dev/null || true
fi
"""


def traces() -> set[str]:
    found = set()
    for top in SCAN:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                if "xapsd" in name:
                    found.add(os.path.join(dirpath, name))
    for path in ACCOUNT_FILES:
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                if line.split(":", 1)[0] == "xapsd":
                    found.add(f"{path}: {line.split(':', 1)[0]}")
    statoverride = Path("/var/lib/dpkg/statoverride")
    if statoverride.exists() and "xapsd" in statoverride.read_text():
        found.add("dpkg-statoverride entry")
    return found


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def lintian(c: Checks, debs: list[str]) -> None:
    r = run("lintian", "--fail-on", "error", "--show-overrides", *debs)
    tags = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "O:", "P:", "X:")]
    for line in tags:
        print(f"     lintian: {line}")
    errors = [line for line in tags if line.startswith("E:")]
    # Exit 1 is lintian failing to run; 2 means a tag at --fail-on's level,
    # which with --show-overrides includes the overridden ones.
    c.check(r.returncode != 1 and not errors, f"lintian: no errors in {len(debs)} package(s)",
            "\n".join(errors) or r.stderr.strip())
    c.check(any("statically-linked-binary" in line for line in tags if line.startswith("O:")),
            "lintian: the static binary's tag is overridden, not missing", tags)


def start_by_hand(c: Checks, port: int) -> None:
    log = tempfile.TemporaryFile()
    # setpriv execs the daemon itself (runuser would stay its parent).
    proc = subprocess.Popen(["setpriv", "--reuid=xapsd", "--regid=xapsd", "--init-groups", "--",
                             "/usr/bin/xapsd", "run", "--config",
                             "/etc/xapsd/xapsd.json", "--listen", f"127.0.0.1:{port}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        want = f"listening on 127.0.0.1:{port}".encode()
        deadline = time.monotonic() + START_TIMEOUT
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            log.seek(0)
            if want in log.read():
                up = True
                break
            time.sleep(0.1)
        log.seek(0)
        if c.check(up, "the daemon started by hand as xapsd listens", log.read()[-2000:].decode(errors="replace")):
            status, body = post(port, "/register", REGISTER)
            c.equal(status, 200, "it answers a register on 127.0.0.1")
            uid = run("id", "-u", "xapsd").stdout.strip()
            status = Path(f"/proc/{proc.pid}/status").read_text()
            c.check(f"\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n" in status, "the process runs as xapsd", status)
            store = Path("/var/lib/xapsd/xapsd.redb")
            c.check(store.exists() and store.owner() == "xapsd", "the store is /var/lib/xapsd/xapsd.redb, xapsd's")
        proc.send_signal(signal.SIGTERM)
        c.equal(proc.wait(timeout=30), 0, "SIGTERM -> exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def host_install(c: Checks, deb: str) -> None:
    before = traces()
    busy = run("dpkg-query", "-W", "-f", "${Status}", "xapsd").stdout
    if not c.check("installed" not in busy and not {t for t in before if "passwd" in t or t == "/var/lib/xapsd"},
                   "this machine has no xapsd yet (not touching an existing one)", sorted(before)):
        return
    try:
        r = run("dpkg", "-i", deb)
        if not c.check(r.returncode == 0, "dpkg -i exits 0", r.stdout + r.stderr):
            return
        c.check("import-go" not in r.stdout, "no import hint without a Go database")
        user = run("getent", "passwd", "xapsd").stdout.strip().split(":")
        c.check(len(user) == 7 and int(user[2]) < 1000, "the xapsd system user exists", user)
        c.equal(user[5:] if len(user) == 7 else None, ["/var/lib/xapsd", "/usr/sbin/nologin"],
                "its home is /var/lib/xapsd, no login shell")
        group = run("getent", "group", "xapsd").stdout.strip().split(":")
        c.check(len(user) == 7 and len(group) == 4 and group[2] == user[3], "the xapsd group is its primary group")
        state = Path("/var/lib/xapsd")
        c.check(state.is_dir() and state.owner() == "xapsd" and state.stat().st_mode & 0o777 == 0o750,
                "/var/lib/xapsd is xapsd's, 0750")
        conf = Path("/etc/xapsd/xapsd.json")
        c.check(conf.owner() == "xapsd" and conf.stat().st_mode & 0o777 == 0o600,
                "/etc/xapsd/xapsd.json is xapsd's, 0600 (dpkg-statoverride)")
        override = run("dpkg-statoverride", "--list", str(conf)).stdout.split()
        c.check(override[:2] + override[3:] == ["xapsd", "xapsd", str(conf)] and int(override[2], 8) == 0o600,
                "the owner is a dpkg-statoverride", override)
        wants = Path("/etc/systemd/system/multi-user.target.wants/xapsd.service")
        c.check(wants.is_symlink() and os.readlink(wants) == "/lib/systemd/system/xapsd.service",
                "deb-systemd-helper enabled the unit")
        c.check(Path("/lib/systemd/system/xapsd.service").is_file(), "the unit is in /lib/systemd/system")

        (state / "database.json").write_text(json.dumps(GO_DATABASE))
        r = run("dpkg", "-i", deb)
        c.check(r.returncode == 0 and "xapsd import-go" in r.stdout,
                "reinstalled beside a Go database.json, postinst names xapsd import-go", r.stdout + r.stderr)
        c.equal(len(run("getent", "passwd", "xapsd").stdout.splitlines()), 1, "the user is not made twice")

        start_by_hand(c, free_port())

        r = run("dpkg", "-r", "xapsd")
        c.equal(r.returncode, 0, "dpkg -r exits 0")
        c.check(not Path("/usr/bin/xapsd").exists() and conf.exists()
                and run("getent", "passwd", "xapsd").returncode == 0,
                "removed: the binary is gone, the config and the user stay")
    finally:
        r = run("dpkg", "--purge", "xapsd")
    c.equal(r.returncode, 0, f"dpkg --purge exits 0 {r.stderr.strip()}".rstrip())
    left = sorted(traces() - before)
    c.equal(left, [], "dpkg --purge leaves nothing behind (files, user, group, override, unit state)")


def go_package(tmp: Path, arch: str) -> Path:
    root = tmp / "go"
    files = {
        "usr/bin/xapsd": ("#!/bin/sh\necho go xapsd\n", 0o755),
        "etc/xapsd/xapsd.yaml": ("loglevel: info\ndatabaseFile: /var/lib/xapsd/database.json\n", 0o644),
        "lib/systemd/system/xapsd.service": ("[Service]\nExecStart=/usr/bin/xapsd\n", 0o644),
        "DEBIAN/control": (f"Package: xapsd\nVersion: {GO_VERSION}\nArchitecture: {arch}\n"
                           "Maintainer: stand-in <go@example.invalid>\nDepends: adduser\n"
                           "Description: stand-in for the Go daemon's package\n", 0o644),
        "DEBIAN/conffiles": ("/etc/xapsd/xapsd.yaml\n", 0o644),
        "DEBIAN/postinst": (GO_POSTINST, 0o755),
        "DEBIAN/postrm": (GO_POSTRM, 0o755),
    }
    for rel, (text, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    deb = tmp / "xapsd-go.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def upgrade_from_go(c: Checks, deb: str, arch: str) -> None:
    before = traces()
    if not c.check(not before & {"/var/lib/xapsd", "/usr/bin/xapsd"}, "no xapsd left before the Go upgrade test",
                   sorted(before)):
        return
    with tempfile.TemporaryDirectory() as tmp:
        go = go_package(Path(tmp), arch)
        try:
            r = run("dpkg", "-i", str(go))
            if not c.check(r.returncode == 0, f"the Go stand-in xapsd {GO_VERSION} installs", r.stdout + r.stderr):
                return
            Path("/var/lib/xapsd").mkdir(exist_ok=True)
            Path("/var/lib/xapsd/database.json").write_text(json.dumps(GO_DATABASE))
            r = run("dpkg", "-i", deb)
            c.check(r.returncode == 0 and f"over ({GO_VERSION})" in r.stdout,
                    "ours installs as an upgrade of the Go package (dpkg: 'over 1.2-1')", r.stdout + r.stderr)
            version = run("dpkg-query", "-W", "-f", "${Version}", "xapsd").stdout
            c.check(version.startswith("1:"), "the installed xapsd is ours (epoch 1)", version)
            c.check(Path("/var/lib/xapsd/database.json").exists() and "xapsd import-go" in r.stdout,
                    "the Go database.json is kept and postinst names xapsd import-go", r.stdout)
            c.check(Path("/usr/bin/xapsd").read_bytes()[:4] == b"\x7fELF", "/usr/bin/xapsd is ours now")
            state = Path("/var/lib/xapsd")
            c.check(state.owner() == "xapsd", "the state folder is xapsd's")
        finally:
            r = run("dpkg", "--purge", "xapsd")
        c.equal(r.returncode, 0, "purging ours after the upgrade exits 0")
        c.equal(sorted(traces() - before), [], "and leaves nothing of either package behind")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    debs = sys.argv[1:]
    c = Checks()
    lintian(c, debs)
    host = run("dpkg", "--print-architecture").stdout.strip()
    native = [d for d in debs if d.endswith(f"_{host}.deb")]
    if os.geteuid() != 0:
        print(f"skip host install: needs root")
    elif not native:
        print(f"skip host install: no package for {host or 'this machine'}")
    else:
        host_install(c, native[0])
        upgrade_from_go(c, native[0], host)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The systemd unit is hardened and `systemd-analyze verify` prints nothing.

  check_systemd.py

Verifies in a scratch --root that has the unit, a stand-in /usr/bin/xapsd
and the host's own units (for the targets the unit pulls in), so a clean
build host without xapsd installed gives the same answer as a NAS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pkgtest import ROOT, Checks

UNIT = ROOT / "packaging/systemd/xapsd.service"

HARDENING = {
    "User": "xapsd",
    "Group": "xapsd",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "StateDirectory": "xapsd",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "CapabilityBoundingSet": "",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
}


def main() -> int:
    c = Checks()
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            settings.setdefault(k.strip(), []).append(v.strip())
    for key, want in HARDENING.items():
        c.check(want in settings.get(key, []), f"xapsd.service sets {key}={want}", settings.get(key))
    c.check(any(v.startswith("/usr/bin/xapsd run --config ") for v in settings.get("ExecStart", [])),
            "xapsd.service runs `xapsd run --config FILE` in the foreground")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/lib/systemd").mkdir(parents=True)
        (root / "etc/systemd/system").mkdir(parents=True)
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        shutil.copy("/bin/true", root / "usr/bin/xapsd")
        shutil.copy(UNIT, root / "etc/systemd/system/xapsd.service")
        r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "xapsd.service"],
                           capture_output=True, text=True)
        out = (r.stdout + r.stderr).strip()
        c.check(r.returncode == 0 and out == "", "systemd-analyze verify prints nothing", out)

        r = subprocess.run(["systemd-sysusers", "--dry-run", f"--root={root}",
                            str(ROOT / "packaging/systemd/xapsd.sysusers")],
                           capture_output=True, text=True)
        c.check(r.returncode == 0 and "xapsd" in r.stdout + r.stderr,
                "systemd-sysusers accepts xapsd.sysusers", (r.stdout + r.stderr).strip())
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

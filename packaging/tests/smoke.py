#!/usr/bin/env python3
"""Run an xapsd binary for real (under qemu-user-static when foreign) and talk to it.

  smoke.py <rust-target> <binary>

Starts `xapsd run --config FILE` in dry run on a fresh store in a temp folder,
waits for `listening on ADDR:PORT`, POSTs a register and a notify as Dovecot's
plugin does, checks the answers, sends SIGTERM and expects exit 0.
Prints `N passed, M failed`; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

QEMU = {
    "x86_64-unknown-linux-musl": None,
    "aarch64-unknown-linux-musl": "qemu-aarch64-static",
    "armv7-unknown-linux-musleabihf": "qemu-arm-static",
    "mipsel-unknown-linux-musl": "qemu-mipsel-static",
    "mips-unknown-linux-musl": "qemu-mips-static",
}

REGISTER = {
    "ApsAccountId": "0715A26B-CA09-4730-A419-793000CA982E",
    "ApsDeviceToken": "2918390218931890821908309283098109381029309829018310983092892829",
    "ApsSubtopic": "com.apple.mobilemail",
    "Username": "alice",
    "Mailboxes": ["INBOX", "Sent Messages"],
}
NOTIFY = {"Username": "alice", "Mailbox": "INBOX", "Events": ["MessageNew"]}

START_TIMEOUT = float(os.environ.get("XAPSD_SMOKE_START_TIMEOUT", "60"))
STOP_TIMEOUT = float(os.environ.get("XAPSD_SMOKE_STOP_TIMEOUT", "30"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in QEMU:
        print(__doc__, file=sys.stderr)
        return 2
    target, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    passed = failed = 0

    def check(ok: bool, what: str, detail: str = "") -> bool:
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok   {target}: {what}")
        else:
            failed += 1
            print(f"FAIL {target}: {what} {detail}".rstrip())
        return ok

    cmd = [binary]
    if QEMU[target]:
        qemu = shutil.which(QEMU[target])
        if not check(qemu is not None, f"{QEMU[target]} is installed"):
            print(f"{passed} passed, {failed} failed")
            return 1
        cmd = [qemu, binary]

    tmp = tempfile.mkdtemp(prefix="xapsd-smoke-")
    port = free_port()
    config = os.path.join(tmp, "xapsd.json")
    settings = {
        "listen": [f"127.0.0.1:{port}"],
        "db": os.path.join(tmp, "xapsd.redb"),
        "log_level": "debug",
    }
    if os.geteuid() == 0:
        # Started as root, xapsd switches to the `xapsd` account, which a CI
        # box does not have; the switch has its own tests (tests/security.rs).
        settings["allow_root"] = True
    with open(config, "w") as f:
        json.dump(settings, f)
    log_path = os.path.join(tmp, "stderr.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd + ["run", "--config", config],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        want = f"listening on 127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            with open(log_path, "rb") as f:
                if want.encode() in f.read():
                    up = True
                    break
            time.sleep(0.2)
        if check(up, f"logs '{want}'", f"(exit {proc.poll()})"):
            status, body = post(port, "/register", REGISTER)
            check(status == 200, "POST /register answers 200", f"(got {status}: {body[:200]!r})")
            check(len(body) > 50, "register answers a topic (dry-run placeholder > 50 bytes)",
                  f"(got {body[:200]!r})")
            status, body = post(port, "/notify", NOTIFY)
            check(status == 200, "POST /notify answers 200", f"(got {status}: {body[:200]!r})")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
                check(False, "exits after SIGTERM", f"(still running after {STOP_TIMEOUT:.0f}s)")
            else:
                check(code == 0, "SIGTERM -> exit 0", f"(exit {code})")
        else:
            check(False, "daemon keeps running", f"(exited {proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        if failed:
            with open(log_path, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            print(f"--- {target} daemon stderr (tail) ---\n{tail}\n---")
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

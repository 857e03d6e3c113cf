"""Helpers shared by xapsd's packaging checks (Python 3.11 standard library)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STANDINS = HERE / "standins"
sys.path.insert(0, str(ROOT / "packaging"))

import mkpkg  # noqa: E402


class Checks:
    """Counts checks, prints each, and ends with `N passed, M failed`."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: object = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {detail}" if detail != "" else ""))
        return ok

    def equal(self, got: object, want: object, what: str) -> bool:
        return self.check(got == want, what, f"\n  got:  {got!r}\n  want: {want!r}")

    def finish(self) -> int:
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed or not self.passed else 0


def gzip_members(blob: bytes) -> list[bytes]:
    """Split concatenated gzip streams; return each stream's raw bytes."""
    members = []
    rest = blob
    while rest:
        d = zlib.decompressobj(wbits=31)
        d.decompress(rest)
        if not d.eof:
            raise ValueError("truncated gzip stream")
        used = len(rest) - len(d.unused_data)
        members.append(rest[:used])
        rest = d.unused_data
    return members


def raw_tar_headers(data: bytes) -> list[dict]:
    """Walk a tar's 512-byte headers by hand (tarfile hides pax and GNU records)."""
    out = []
    off = 0
    while off + 512 <= len(data):
        block = data[off:off + 512]
        if block == b"\0" * 512:
            out.append({"end": True, "offset": off})
            off += 512
            continue
        name = block[0:100].rstrip(b"\0").decode()
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        out.append({
            "name": name,
            "type": block[156:157],
            "magic": block[257:265],
            "uid": int(block[108:116].rstrip(b"\0 ") or b"0", 8),
            "gid": int(block[116:124].rstrip(b"\0 ") or b"0", 8),
            "offset": off,
        })
        off += 512 + (size + 511) // 512 * 512
    return out


def tar_members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    tar = tarfile.open(fileobj=io.BytesIO(data))
    out = {}
    for ti in tar.getmembers():
        content = tar.extractfile(ti).read() if ti.isfile() else None
        out[ti.name] = (ti, content)
    return out


def declaration() -> dict:
    return mkpkg.load_declaration()


def find_packages(out: Path) -> dict[str, Path]:
    found = {}
    for p in sorted(out.glob("openwrt/*.ipk")):
        found["ipk"] = p
    for p in sorted(out.glob("openwrt/*.apk")):
        found["openwrt-apk"] = p
    for p in sorted(out.glob("alpine/*.apk")):
        found["alpine-apk"] = p
    for p in sorted(out.glob("debian/*.deb")):
        found["deb"] = p
    for p in sorted(out.glob("synology/*.spk")):
        found["spk"] = p
    for p in sorted(out.glob("oci/xapsd-layer-*.tar")):
        found["oci-layer"] = p
    return found


# ------------------------------------------------------------ chroot roots

def busybox() -> str:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(cand):
            return cand
    raise SystemExit("busybox (static) is needed: apt-get install busybox-static")


def make_root(extra_users: str = "") -> Path:
    """A throwaway root with a static busybox as /bin/sh and its applets."""
    root = Path(tempfile.mkdtemp(prefix="xapsd-root-"))
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "var", "run", "lib/functions"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "dev").mkdir()
    try:
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        (root / "dev/null").touch(mode=0o666)
    os.chmod(root / "dev/null", 0o666)
    shutil.copy2(busybox(), root / "bin/busybox")
    applets = subprocess.run([busybox(), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        link = root / "bin" / a
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n" + extra_users)
    (root / "etc/group").write_text("root:x:0:\n")
    return root


def run_in_root(root: Path, script: str, env: dict[str, str] | None = None,
                check: Checks | None = None, what: str = "") -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    base.update(env or {})
    cmd = ["chroot", str(root), "/bin/sh", "-c", script]
    if os.geteuid() != 0:
        cmd = ["unshare", "--map-root-user", "--"] + cmd
    r = subprocess.run(cmd, env=base, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or r.stderr.strip():
        sys.stdout.write(r.stdout)
        sys.stdout.write(r.stderr)
    if check is not None:
        check.check(r.returncode == 0, what or f"runs: {script}", f"exit {r.returncode}")
    return r


def install_standin(root: Path, name: str, dest: str, mode: int = 0o755) -> None:
    path = root / dest.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(STANDINS / name, path)
    os.chmod(path, mode)


def extract(data_tar: bytes, root: Path) -> list[str]:
    """Unpack a data tar as the package managers do; return its file list."""
    tar = tarfile.open(fileobj=io.BytesIO(data_tar))
    names = []
    for ti in tar.getmembers():
        target = root / ti.name.lstrip("./")
        if ti.isdir():
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, ti.mode)
        elif ti.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(ti).read())
            os.chmod(target, ti.mode)
            names.append("/" + ti.name.lstrip("./"))
    return names


def gunzip(blob: bytes) -> bytes:
    return gzip.decompress(blob)

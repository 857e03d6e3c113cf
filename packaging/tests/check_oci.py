#!/usr/bin/env python3
"""Check the container image packaging/build-oci.sh made.

  check_oci.py <out-dir>

Reads <out-dir>/oci/ with skopeo, as a registry client would: the
oci-archive's index names one linux image per declared architecture;
each image's manifest has one gzip layer, and its config the entrypoint,
command, user, /data volume and architecture. Then the layer is unpacked
(its digest and diff_id checked) and the binary in it is run for real:
`--version`, and smoke.py's dry-run register and notify (under qemu for
arm64). The docker-archive of each architecture is inspected too, and
packaging/oci/compose.yaml: a sidecar in the Dovecot service's network
namespace, running this image with flags the daemon knows.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from check_init import daemon_keys
from pkgtest import HERE, ROOT, Checks, declaration

INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
QEMU = {"amd64": None, "arm64": "qemu-aarch64-static"}


def skopeo(*args: str) -> dict:
    r = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def check_compose(c: Checks, version: str) -> None:
    """The compose example, read as text (no YAML parser in the standard library)."""
    text = (ROOT / "packaging/oci/compose.yaml").read_text()
    services = re.split(r"^  (?=\w[\w-]*:\n)", text.split("\nservices:\n", 1)[-1], flags=re.M)
    by_name = {s.split(":", 1)[0]: s for s in services if s.strip()}
    c.check({"dovecot", "xapsd"} <= set(by_name), "compose: a dovecot and an xapsd service", sorted(by_name))
    xapsd = by_name.get("xapsd", "")
    c.check('network_mode: "service:dovecot"' in xapsd, "compose: xapsd joins the dovecot network namespace")
    c.check(f"image: xapsd:{version}\n" in xapsd, f"compose: runs the image xapsd:{version}")
    c.check("ports:" not in xapsd, "compose: xapsd publishes no port")
    c.check(re.search(r"^\s+- \S+:/data/?$", xapsd, re.M) is not None, "compose: a volume at /data")
    m = re.search(r"^    command: (\[.*\])$", xapsd, re.M)
    command = json.loads(m.group(1)) if m else []
    c.check(command[:3] == ["run", "--db", "/data/xapsd.redb"], "compose: command runs with the store in /data",
            command)
    keys = set(daemon_keys())
    flags = [a[2:].replace("-", "_") for a in command if a.startswith("--")]
    c.check(flags and all(f in keys for f in flags), "compose: every flag is a daemon config key", flags)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1]) / "oci"
    decl = declaration()
    pkg, flavor = decl["package"], decl["flavor"]["oci"]
    version = pkg["version"]
    targets = {a["oci"]: t for t, a in decl["targets"].items() if a.get("oci")}
    layout = out / "layout"
    c = Checks()
    check_compose(c, version)
    archive = out / f"xapsd-{version}.oci.tar"
    if not c.check(archive.is_file() and layout.is_dir(), f"{archive.name} and layout/ were built"):
        return c.finish()

    try:
        index = skopeo("inspect", "--raw", f"oci-archive:{archive}:{version}")
    except RuntimeError as e:
        c.check(False, "skopeo reads the oci-archive's index", e)
        return c.finish()
    c.equal(index.get("mediaType"), INDEX, "the archive's tag is an image index")
    platforms = sorted((m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"])
    c.equal(platforms, sorted(("linux", a) for a in targets), "the index has one linux image per architecture")
    top = json.loads((layout / "index.json").read_text())
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in top["manifests"]}
    c.check(refs.get("latest") == refs.get(version), "layout tags latest and the version name the same index")

    for arch, target in sorted(targets.items()):
        label = f"image {arch}"
        ref = f"oci:{layout}:{version}-{arch}"
        manifest = skopeo("inspect", "--raw", ref)
        config = skopeo("inspect", "--config", ref)
        layers = manifest.get("layers", [])
        c.equal([la["mediaType"] for la in layers], [LAYER], f"{label}: one gzip layer")
        c.equal((config.get("os"), config.get("architecture")), ("linux", arch), f"{label}: config os/architecture")
        cfg = config.get("config", {})
        c.equal(cfg.get("Entrypoint"), ["/usr/bin/xapsd"], f"{label}: entrypoint /usr/bin/xapsd")
        c.equal(cfg.get("Cmd"), ["run", "--db", "/data/xapsd.redb"], f"{label}: command run --db /data/xapsd.redb")
        c.equal(cfg.get("User"), flavor["user"], f"{label}: user {flavor['user']} (not root)")
        c.equal(list(cfg.get("Volumes", {})), ["/data"], f"{label}: /data is a volume")
        c.equal(cfg.get("Labels", {}).get("org.opencontainers.image.version"), version, f"{label}: version label")
        c.equal(config.get("rootfs", {}).get("type"), "layers", f"{label}: rootfs of layers")
        if len(layers) != 1:
            continue

        blob = (layout / "blobs" / "sha256" / layers[0]["digest"].split(":", 1)[1]).read_bytes()
        c.equal("sha256:" + hashlib.sha256(blob).hexdigest(), layers[0]["digest"], f"{label}: layer digest")
        raw = gzip.decompress(blob)
        c.equal(["sha256:" + hashlib.sha256(raw).hexdigest()], config["rootfs"]["diff_ids"],
                f"{label}: layer diff_id")
        tmp = Path(tempfile.mkdtemp(prefix="xapsd-oci-"))
        try:
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                tar.extractall(tmp, filter="tar")
            binary = tmp / "usr/bin/xapsd"
            c.check(binary.is_file() and os.access(binary, os.X_OK), f"{label}: /usr/bin/xapsd unpacked")
            c.check((tmp / "data").is_dir(), f"{label}: /data unpacked")
            cmd = [str(binary), "--version"]
            if QEMU[arch]:
                cmd = [shutil.which(QEMU[arch]) or QEMU[arch]] + cmd
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            c.check(r.returncode == 0 and version in r.stdout, f"{label}: the binary runs: --version",
                    (r.stdout + r.stderr).strip())
            r = subprocess.run([sys.executable, str(HERE / "smoke.py"), target, str(binary)],
                               capture_output=True, text=True, timeout=180)
            c.check(r.returncode == 0, f"{label}: the binary answers register and notify (smoke.py)",
                    r.stdout[-3000:])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        docker = out / f"xapsd-{version}-{arch}.docker.tar"
        try:
            got = skopeo("inspect", f"docker-archive:{docker}")
            c.equal(got.get("Architecture"), arch, f"{docker.name}: docker-archive of {arch}")
        except RuntimeError as e:
            c.check(False, f"{docker.name}: skopeo reads it", e)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

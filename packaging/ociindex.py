#!/usr/bin/env python3
"""Tag a multi-architecture index of images already in an OCI layout.

  ociindex.py LAYOUT NEW-TAG... -- IMAGE-TAG...

umoci builds one image per tag; a registry client picks the image for its
platform from an image index, which umoci does not make. This writes that
index as a blob (one descriptor per IMAGE-TAG, with the platform from the
image's config) and points each NEW-TAG at it in LAYOUT/index.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF = "org.opencontainers.image.ref.name"


def blob(layout: Path, digest: str) -> bytes:
    algo, _, hexdigest = digest.partition(":")
    return (layout / "blobs" / algo / hexdigest).read_bytes()


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    layout = Path(argv[0])
    new_tags = argv[1:argv.index("--")]
    image_tags = argv[argv.index("--") + 1:]
    top = json.loads((layout / "index.json").read_text())
    by_tag = {m.get("annotations", {}).get(REF): m for m in top["manifests"]}

    descriptors = []
    for tag in image_tags:
        if tag not in by_tag:
            raise SystemExit(f"ociindex: no image tagged {tag} in {layout}")
        desc = by_tag[tag]
        manifest = json.loads(blob(layout, desc["digest"]))
        config = json.loads(blob(layout, manifest["config"]["digest"]))
        descriptors.append({
            "mediaType": MANIFEST,
            "digest": desc["digest"],
            "size": desc["size"],
            "platform": {"architecture": config["architecture"], "os": config["os"]},
        })

    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": descriptors},
                       separators=(",", ":")).encode()
    digest = hashlib.sha256(index).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(index)
    top["manifests"] = [m for m in top["manifests"]
                        if m.get("annotations", {}).get(REF) not in new_tags]
    for tag in new_tags:
        top["manifests"].append({"mediaType": INDEX, "digest": f"sha256:{digest}",
                                 "size": len(index), "annotations": {REF: tag}})
    (layout / "index.json").write_text(json.dumps(top, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/bin/sh
# Build xapsd's container image, FROM scratch, for amd64 and arm64, as an
# OCI image without a container engine: umoci assembles it, skopeo exports.
#
#   packaging/build-oci.sh <out-dir>
#
# Takes the root file system layers that packaging/build.sh wrote into
# <out-dir>/<rust-target>/oci/, so build those two targets there first:
#
#   packaging/build.sh x86_64-unknown-linux-musl <out-dir>/x86_64-unknown-linux-musl
#   packaging/build.sh aarch64-unknown-linux-musl <out-dir>/aarch64-unknown-linux-musl
#
# Writes into <out-dir>/oci/:
#   layout/                       the OCI image layout; tags <ver>-amd64 and
#                                 <ver>-arm64 (one image each), and <ver> and
#                                 latest (the index of both)
#   xapsd-<ver>.oci.tar           the same as one oci-archive, to push with
#                                 `skopeo copy --all oci-archive:FILE docker://REPO:TAG`
#   xapsd-<ver>-<arch>.docker.tar one image each for `docker load -i FILE`
#
# The image runs /usr/bin/xapsd as 65532:65532 with `run --db
# /data/xapsd.redb` (a volume); give other flags, or `run --config FILE`,
# as the container's command. Needs umoci, skopeo (Debian packages) and
# python3; no root.
set -eu

[ $# -eq 1 ] || {
	echo "usage: $0 <out-dir>" >&2
	exit 2
}
here="$(cd "$(dirname "$0")" && pwd)"
out="$(cd "$1" && pwd)"
for tool in umoci skopeo python3; do
	command -v "$tool" > /dev/null || {
		echo "$0: $tool is needed (apt-get install umoci skopeo)" >&2
		exit 1
	}
done

# From the declaration: version, the image's user, the targets and their
# OCI architectures, labels; and the build time (as mkpkg.py takes it).
version="" user="" arches="" created="" url="" license="" summary="" maintainer=""
eval "$(python3 - "$here" << 'EOF'
import shlex, sys, time
sys.path.insert(0, sys.argv[1])
import mkpkg
decl = mkpkg.load_declaration()
pkg, oci = decl["package"], decl["flavor"]["oci"]
arches = " ".join(f"{t}={a['oci']}" for t, a in decl["targets"].items() if a.get("oci"))
created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mkpkg.source_date_epoch()))
for k, v in (("version", pkg["version"]), ("user", oci["user"]), ("arches", arches),
             ("created", created), ("url", pkg["url"]), ("license", pkg["license"]),
             ("summary", pkg["description"]), ("maintainer", pkg["maintainer"])):
    print(f"{k}={shlex.quote(v)}")
EOF
)"

dest="$out/oci"
layout="$dest/layout"
rm -rf "$dest"
mkdir -p "$dest"
umoci init --layout "$layout"

tags=""
for pair in $arches; do
	target="${pair%%=*}"
	arch="${pair#*=}"
	layer="$out/$target/oci/xapsd-layer-$arch.tar"
	[ -f "$layer" ] || {
		echo "$0: $layer is missing: run packaging/build.sh $target $out/$target first" >&2
		exit 1
	}
	tag="$version-$arch"
	umoci new --image "$layout:$tag"
	umoci raw add-layer --image "$layout:$tag" --history.created "$created" \
		--history.created_by "packaging/build-oci.sh (xapsd $version, $target)" "$layer"
	umoci config --image "$layout:$tag" --no-history \
		--architecture "$arch" --os linux --created "$created" --author "$maintainer" \
		--config.user "$user" \
		--config.entrypoint /usr/bin/xapsd \
		--config.cmd run --config.cmd --db --config.cmd /data/xapsd.redb \
		--config.volume /data --config.workingdir /data --config.stopsignal SIGTERM \
		--config.label "org.opencontainers.image.title=xapsd" \
		--config.label "org.opencontainers.image.description=$summary" \
		--config.label "org.opencontainers.image.version=$version" \
		--config.label "org.opencontainers.image.licenses=$license" \
		--config.label "org.opencontainers.image.source=$url"
	tags="$tags $tag"
done
umoci gc --layout "$layout"

# umoci tags single images; the multi-arch index that `docker pull` picks
# the right one from is a small JSON blob of their descriptors.
# shellcheck disable=SC2086 # a list of tags
python3 "$here/ociindex.py" "$layout" "$version" latest -- $tags

# Local copies only, so no signature policy applies.
skopeo --insecure-policy copy --quiet --all "oci:$layout:$version" \
	"oci-archive:$dest/xapsd-$version.oci.tar:$version"
for tag in $tags; do
	skopeo --insecure-policy copy --quiet "oci:$layout:$tag" \
		"docker-archive:$dest/xapsd-$tag.docker.tar:xapsd:$version"
done
ls -l "$dest"

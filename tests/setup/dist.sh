#!/bin/bash
# dist.sh assembles imagegate's release tree for Zuul operators, after
# `make build-all` has put the module binaries (linux/amd64, arm64, ppc64le
# and s390x: DIST_ARCHES) and their documentation in
# roles/imagegate-modules/library, and `make buildkitd-dist` has built
# buildkitd for the same architectures into $BUILDKITD_DIST:
#
#   dist/imagegate/                 the tree to add to Zuul as a project
#     zuul.d/ playbooks/ roles/     jobs, playbooks, roles (with the binaries;
#                                   roles/ensure-buildkit/files/linux_<arch>/
#                                   buildkitd)
#     docs/ README.md               documentation
#     bin/linux_<arch>/             the commands (runner, registry, ...)
#     images/imagegate-registry/    the registry's container image (OCI layout, tarballs)
#     roles/ensure-buildkit/files/sbom-scanner/  the SBOM scanner's image (OCI layout)
#     VERSION SHA256SUMS
#   dist/imagegate-<version>.tar.gz the same tree, packed reproducibly
#
# Usage: tests/setup/dist.sh [output directory, default dist]
set -euo pipefail

cd "$(dirname "$0")/../.."
OUT=${1:-dist}
TREE=$OUT/imagegate
LIBRARY=roles/imagegate-modules/library
GO=${GO:-go}
read -r -a ARCHES <<< "${DIST_ARCHES:-amd64 arm64 ppc64le s390x}"

log() { echo "dist: $*" >&2; }
die() { echo "dist: $*" >&2; exit 1; }

suffix() { [ "$1" = amd64 ] && echo "" || echo "_$1"; }

# Every module must be there for every architecture, with its docs.
modules=()
for main in modules/*/main.go; do
	modules+=("$(basename "$(dirname "$main")")")
done
[ ${#modules[@]} -gt 0 ] || die "no modules found under modules/"
missing=()
for m in "${modules[@]}"; do
	[ -f "$LIBRARY/$m.yml" ] || missing+=("$LIBRARY/$m.yml")
	for a in "${ARCHES[@]}"; do
		[ -x "$LIBRARY/$m$(suffix "$a")" ] || missing+=("$LIBRARY/$m$(suffix "$a")")
	done
	[ -L "roles/imagegate-modules/action_plugins/$m.py" ] ||
		die "module $m has no action plugin link roles/imagegate-modules/action_plugins/$m.py"
done
[ ${#missing[@]} -eq 0 ] || die "missing (run make build-all): ${missing[*]}"
# Each binary must be built for the architecture its name says: the action
# plugin trusts the name.
for m in "${modules[@]}"; do
	for a in "${ARCHES[@]}"; do
		bin="$LIBRARY/$m$(suffix "$a")"
		got=$($GO version -m "$bin" 2>/dev/null | sed -n 's/^[[:space:]]*build[[:space:]]*GOARCH=//p')
		goos=$($GO version -m "$bin" 2>/dev/null | sed -n 's/^[[:space:]]*build[[:space:]]*GOOS=//p')
		[ "$got" = "$a" ] && [ "$goos" = linux ] ||
			die "$bin is built for ${goos:-?}/${got:-?}, not linux/$a: rebuild with make build-all"
	done
done

# buildkitd for every architecture, from the pinned BuildKit module (the
# version of go.mod, which docker_image_build's client links): checked like
# the modules, by the build information Go records in the binary.
BUILDKIT_VERSION=$(sed -n 's|^[[:space:]]*github.com/moby/buildkit \(v[^ ]*\).*|\1|p' go.mod | head -1)
[ -n "$BUILDKIT_VERSION" ] || die "go.mod does not require github.com/moby/buildkit"
[ -n "${BUILDKITD_DIST:-}" ] || die "BUILDKITD_DIST is not set: run make dist (or tests/setup/deps.sh buildkitd-dist and export what deps.sh --print prints)"
for a in "${ARCHES[@]}"; do
	bin="$BUILDKITD_DIST/linux_$a/buildkitd"
	[ -x "$bin" ] || die "missing $bin: run make buildkitd-dist"
	info=$($GO version -m "$bin" 2>/dev/null) || die "$bin is not a Go binary"
	grep -q "GOARCH=$a\$" <<< "$info" && grep -q "GOOS=linux\$" <<< "$info" && grep -q "CGO_ENABLED=0" <<< "$info" ||
		die "$bin is not a static linux/$a build: rebuild with make buildkitd-dist"
	grep -q "path[[:space:]]*github.com/moby/buildkit/cmd/buildkitd\$" <<< "$info" || die "$bin is not buildkitd"
done
# deps.sh caches by version and stamps the version into the binary.
[[ "$BUILDKITD_DIST" == *-"$BUILDKIT_VERSION" ]] ||
	die "BUILDKITD_DIST $BUILDKITD_DIST is not for BuildKit $BUILDKIT_VERSION (go.mod's)"
host=$($GO env GOARCH)
if [ -x "$BUILDKITD_DIST/linux_$host/buildkitd" ]; then
	got=$("$BUILDKITD_DIST/linux_$host/buildkitd" --version) || die "buildkitd --version failed"
	[[ " $got " == *" $BUILDKIT_VERSION "* ]] || die "buildkitd --version says '$got', not $BUILDKIT_VERSION: rebuild with make buildkitd-dist"
fi

VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
log "assembling $TREE ($VERSION, ${#modules[@]} modules, ${ARCHES[*]})"
rm -rf "$TREE" "$OUT"/imagegate-*.tar.gz
mkdir -p "$TREE"

# Tracked files of the Zuul-facing directories, then the built library.
git ls-files -z zuul.d playbooks roles docs README.md LICENSE 2>/dev/null |
	while IFS= read -r -d '' f; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		mkdir -p "$TREE/$(dirname "$f")"
		cp -P "$f" "$TREE/$f"
	done
mkdir -p "$TREE/$LIBRARY"
for m in "${modules[@]}"; do
	cp "$LIBRARY/$m.yml" "$TREE/$LIBRARY/"
	for a in "${ARCHES[@]}"; do
		cp "$LIBRARY/$m$(suffix "$a")" "$TREE/$LIBRARY/"
	done
done

for a in "${ARCHES[@]}"; do
	mkdir -p "$TREE/roles/ensure-buildkit/files/linux_$a"
	cp "$BUILDKITD_DIST/linux_$a/buildkitd" "$TREE/roles/ensure-buildkit/files/linux_$a/buildkitd"
done

# The commands, for every architecture.
commands=()
for main in cmd/*/main.go; do
	[ -f "$main" ] && commands+=("$(basename "$(dirname "$main")")")
done
for a in "${ARCHES[@]}"; do
	for c in "${commands[@]}"; do
		CGO_ENABLED=0 GOOS=linux GOARCH=$a $GO build -trimpath -ldflags "-s -w" \
			-o "$TREE/bin/linux_$a/$c" "./cmd/$c"
	done
done

# The container image of imagegate-registry, a drop-in for zuul-registry's
# (command `-c /conf/registry.yaml serve`, a /storage volume), assembled
# from the static binaries above onto an empty base without a container
# runtime (internal/registryimage): images/imagegate-registry/oci is an
# OCI layout holding one index for every architecture, and
# images/imagegate-registry/linux_<arch>.tar a tarball per architecture
# for `docker load`. The image is for amd64 and arm64, as zuul-registry's
# is published (REGISTRY_IMAGE_ARCHES, each one of DIST_ARCHES).
read -r -a IMAGE_ARCHES <<< "${REGISTRY_IMAGE_ARCHES:-amd64 arm64}"
image_mtime=$(git log -1 --format=%cI 2>/dev/null | sed 's/+00:00$/Z/' || true)
image_args=()
for a in "${IMAGE_ARCHES[@]}"; do
	[[ " ${ARCHES[*]} " == *" $a "* ]] || die "REGISTRY_IMAGE_ARCHES has $a, which DIST_ARCHES (${ARCHES[*]}) does not build"
	image_args+=("linux/$a=$TREE/bin/linux_$a/imagegate-registry")
done
$GO run ./internal/registryimage -out "$TREE/images/imagegate-registry" \
	-tag "imagegate/imagegate-registry:$VERSION" ${image_mtime:+-mtime "$(date -u -d "$image_mtime" +%Y-%m-%dT%H:%M:%SZ)"} \
	"${image_args[@]}" >&2

# The SBOM scanner BuildKit runs on every built image
# (cmd/imagegate-sbom-scanner; docs/signing.md), as an OCI layout with one
# index for amd64 and arm64 (SBOM_SCANNER_ARCHES, each one of DIST_ARCHES;
# BuildKit runs the scanner for buildkitd's own platform, whatever the
# image's): ensure-buildkit installs it on the node, docker_image_build
# pushes it into the buildset registry for buildkitd to pull.
read -r -a SCANNER_ARCHES <<< "${SBOM_SCANNER_ARCHES:-amd64 arm64}"
scanner_args=()
for a in "${SCANNER_ARCHES[@]}"; do
	[[ " ${ARCHES[*]} " == *" $a "* ]] || die "SBOM_SCANNER_ARCHES has $a, which DIST_ARCHES (${ARCHES[*]}) does not build"
	scanner_args+=("linux/$a=$TREE/bin/linux_$a/imagegate-sbom-scanner")
done
$GO run ./internal/cmd/sbomimage -out "$TREE/roles/ensure-buildkit/files/sbom-scanner" \
	-tag "$VERSION" ${image_mtime:+-mtime "$(date -u -d "$image_mtime" +%Y-%m-%dT%H:%M:%SZ)"} \
	"${scanner_args[@]}" >&2

echo "$VERSION" > "$TREE/VERSION"
(cd "$TREE" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)

# Reproducible tarball: sorted names, fixed owner and time.
mtime=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
tarball="$OUT/imagegate-$VERSION.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" \
	-C "$OUT" -cf - imagegate | gzip -n > "$tarball"
log "wrote $TREE and $tarball ($(du -sh "$tarball" | cut -f1))"

#!/bin/bash
# deps.sh installs what imagegate's tests and benchmarks need on a Debian 12
# machine, idempotently: Debian packages, and pinned tools built from the Go
# module proxy into a cache outside the repository. It prints the tool paths
# as make variables on its last lines when called with --print.
#
# Tools are cached by version under $IMAGEGATE_TOOLS (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/imagegate/tools); delete that directory to
# rebuild them.
set -euo pipefail

TOOLS=${IMAGEGATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/imagegate/tools}
BUILDKIT_VERSION=v0.34.2
VERSITYGW_VERSION=v1.8.0
STATICCHECK_VERSION=v0.8.2
GGCR_VERSION=v0.22.1
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
# cosign, the peer that checks imagegate's signatures (and signs for the
# interop tests). v2: its `sign --key` writes the simple-signing payload
# under cosign's tag or, with COSIGN_EXPERIMENTAL=1
# --registry-referrers-mode=oci-1-1, as an OCI 1.1 referrer, and `verify
# --experimental-oci11` reads both. Cold build about 6 minutes on 2 cores.
COSIGN_VERSION=v2.6.5

APT_PACKAGES=(docker.io runc skopeo podman docker-registry ansible-core
	busybox-static containerd openssl ca-certificates iproute2 uidmap
	util-linux curl git openssh-client openssh-server
	# OpenStack Swift, all in one for the tests (internal/testenv/swift.go):
	# the four servers (tempauth is proxy middleware), memcached for the
	# proxy's tokens, and Keystone (python3-keystone: keystone-manage and
	# keystone-wsgi-public, no service) with keystonemiddleware for the
	# proxy's authtoken.
	swift swift-proxy swift-account swift-container swift-object memcached
	python3-keystone python3-keystonemiddleware)

log() { echo "deps: $*" >&2; }

need_root() {
	if [ "$(id -u)" != 0 ]; then
		if command -v sudo >/dev/null; then sudo "$@"; else
			log "must run as root (or with sudo) to: $*"; exit 1; fi
	else "$@"; fi
}

install_apt() {
	local missing=()
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then return 0; fi
	log "installing Debian packages: ${missing[*]}"
	need_root apt-get update -qq
	need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# The tests start their own sshd (on loopback, a free port, temporary
	# keys); the system's ssh service that openssh-server's postinst starts
	# under systemd is not needed: stop it when this run installed it.
	if [[ " ${missing[*]} " == *" openssh-server "* ]] && [ -d /run/systemd/system ]; then
		need_root systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
	fi
	# Likewise the system's memcached and Swift services: the tests start
	# their own on loopback.
	if [[ " ${missing[*]} " == *" memcached "* || " ${missing[*]} " == *" swift-proxy "* ]] && [ -d /run/systemd/system ]; then
		need_root systemctl disable --now memcached.service swift-proxy.service swift-account.service \
			swift-container.service swift-object.service >/dev/null 2>&1 || true
	fi
}

# go_module_dir downloads a module and prints a writable copy of its directory.
go_module_dir() {
	local mod=$1 dst=$2
	local dir
	dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$mod" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	rm -rf "$dst" && cp -r "$dir" "$dst" && chmod -R u+w "$dst"
}

build_buildkit() {
	local out=$TOOLS/buildkit-$BUILDKIT_VERSION
	[ -x "$out/buildkitd" ] && [ -x "$out/buildctl" ] && return 0
	log "building buildkitd $BUILDKIT_VERSION (a few minutes, once)"
	local src; src=$(mktemp -d)
	go_module_dir "github.com/moby/buildkit@$BUILDKIT_VERSION" "$src/buildkit"
	(cd "$src/buildkit" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$out.tmp/buildkitd" ./cmd/buildkitd &&
		GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$out.tmp/buildctl" ./cmd/buildctl)
	rm -rf "$out" "$src" && mv "$out.tmp" "$out"
}

# The release tree ships buildkitd for every architecture of `make dist`
# (ensure-buildkit installs it on nodes, which need nothing else but
# Debian's runc). Built from the same pinned module as the test buildkitd,
# static and stripped, cross-compiled with GOARCH, with its version stamped
# in (buildkitd --version); each architecture is built once and cached
# under $TOOLS/buildkitd-dist-<version>/linux_<arch>. Cold: about 11
# minutes per architecture on 2 cores (amd64 reuses the test build's
# compiled packages: seconds).
BUILDKIT_DIST_ARCHES=(amd64 arm64 ppc64le s390x)

build_buildkit_dist() {
	local out=$TOOLS/buildkitd-dist-$BUILDKIT_VERSION
	local todo=()
	for a in "${BUILDKIT_DIST_ARCHES[@]}"; do
		[ -x "$out/linux_$a/buildkitd" ] || todo+=("$a")
	done
	[ ${#todo[@]} -eq 0 ] && return 0
	log "building buildkitd $BUILDKIT_VERSION for the release tree: linux/${todo[*]} (several minutes per architecture, once)"
	local src; src=$(mktemp -d)
	go_module_dir "github.com/moby/buildkit@$BUILDKIT_VERSION" "$src/buildkit"
	for a in "${todo[@]}"; do
		local start=$SECONDS
		mkdir -p "$out/linux_$a"
		(cd "$src/buildkit" && GOFLAGS=-mod=mod CGO_ENABLED=0 GOOS=linux GOARCH=$a \
			go build -trimpath -ldflags "-s -w -X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION" \
			-o "$out/linux_$a/buildkitd.tmp" ./cmd/buildkitd)
		mv "$out/linux_$a/buildkitd.tmp" "$out/linux_$a/buildkitd"
		log "built buildkitd for linux/$a in $((SECONDS - start)) s"
	done
	rm -rf "$src"
}

build_versitygw() {
	local out=$TOOLS/versitygw-$VERSITYGW_VERSION
	[ -x "$out/versitygw" ] && return 0
	log "building versitygw $VERSITYGW_VERSION (a few minutes, once)"
	(cd /tmp && GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
	rm -rf "$out" && mv "$out.tmp" "$out"
}

build_conformance() {
	local out=$TOOLS/oci-conformance-$CONFORMANCE_VERSION
	[ -x "$out/conformance.test" ] && return 0
	log "building the OCI distribution-spec conformance suite"
	local src; src=$(mktemp -d)
	go_module_dir "github.com/opencontainers/distribution-spec/conformance@$CONFORMANCE_VERSION" "$src/conformance"
	mkdir -p "$out.tmp"
	(cd "$src/conformance" && GOFLAGS=-mod=mod go test -c -o "$out.tmp/conformance.test" . 2>/dev/null ||
		(cd "$src/conformance" && GOFLAGS=-mod=mod go build -o "$out.tmp/conformance.test" .))
	rm -rf "$out" "$src" && mv "$out.tmp" "$out"
}

# SeaweedFS is only for `make test-seaweedfs`: `go install` refuses it (its
# go.mod has a replace directive), so build from a copy of the module.
build_seaweedfs() {
	local out=$TOOLS/seaweedfs-$SEAWEEDFS_VERSION
	[ -x "$out/weed" ] && return 0
	log "building SeaweedFS $SEAWEEDFS_VERSION (about 10 minutes, once)"
	local src; src=$(mktemp -d)
	go_module_dir "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" "$src/seaweedfs"
	mkdir -p "$out.tmp"
	(cd "$src/seaweedfs" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp/weed" ./weed)
	rm -rf "$out" "$src" && mv "$out.tmp" "$out"
}

build_go_tool() { # name version package
	local out=$TOOLS/$1-$2
	[ -x "$out/$1" ] && return 0
	log "installing $3@$2"
	(cd /tmp && GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath "$3@$2")
	rm -rf "$out" && mv "$out.tmp" "$out"
}

main() {
	mkdir -p "$TOOLS"
	case "${1:-all}" in
	--print)
		echo "BUILDKITD=$TOOLS/buildkit-$BUILDKIT_VERSION/buildkitd"
		echo "BUILDCTL=$TOOLS/buildkit-$BUILDKIT_VERSION/buildctl"
		echo "BUILDKITD_DIST=$TOOLS/buildkitd-dist-$BUILDKIT_VERSION"
		echo "VERSITYGW=$TOOLS/versitygw-$VERSITYGW_VERSION/versitygw"
		echo "OCI_CONFORMANCE=$TOOLS/oci-conformance-$CONFORMANCE_VERSION/conformance.test"
		echo "STATICCHECK=$TOOLS/staticcheck-$STATICCHECK_VERSION/staticcheck"
		echo "CRANE=$TOOLS/crane-$GGCR_VERSION/crane"
		echo "SEAWEEDFS=$TOOLS/seaweedfs-$SEAWEEDFS_VERSION/weed"
		echo "COSIGN=$TOOLS/cosign-$COSIGN_VERSION/cosign"
		return 0 ;;
	apt) install_apt; return ;;
	seaweedfs) build_seaweedfs; return ;;
	buildkitd-dist) build_buildkit_dist; return ;;
	lint) build_go_tool staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck; return ;;
	esac
	# The Go builds and apt run side by side: neither needs the other.
	local pids=()
	install_apt & pids+=($!)
	( build_buildkit && build_conformance &&
		build_go_tool cosign "$COSIGN_VERSION" github.com/sigstore/cosign/v2/cmd/cosign ) & pids+=($!)
	( build_versitygw && build_go_tool staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck &&
		build_go_tool crane "$GGCR_VERSION" github.com/google/go-containerregistry/cmd/crane ) & pids+=($!)
	local rc=0
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	if [ $rc != 0 ]; then log "installing dependencies failed"; exit 1; fi
}

main "$@"

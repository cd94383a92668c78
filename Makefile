# imagegate: speculative gating for container images, as Ansible modules in Go.
#
#   make demo    run the gate-and-promote workflow end to end on this machine
#   make test    install what the tests need, then lint and run every test
#   make build   build the modules for this machine's architecture
#   make dist    build the release tree (linux/amd64, arm64, ppc64le, s390x)
#   make bench   benchmarks beside skopeo, docker and the distribution registry
#   make test-swift  the full Swift suite (make test runs its smoke test)

SHELL := /bin/bash
GO ?= go

# Tool locations (built by tests/setup/deps.sh, cached outside the repo).
$(foreach v,$(shell tests/setup/deps.sh --print),$(eval export $(v)))

MODULES := $(notdir $(patsubst %/,%,$(dir $(wildcard modules/*/main.go))))
COMMANDS := $(notdir $(patsubst %/,%,$(dir $(wildcard cmd/*/main.go))))
HOST_ARCH := $(shell $(GO) env GOARCH)
ARCH ?= $(HOST_ARCH)
LIBRARY := roles/imagegate-modules/library
LDFLAGS := -s -w
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"
# The module for linux/amd64 carries the plain name; other architectures a
# suffix. The imagegate action plugin picks the one that matches each host.
arch_suffix = $(if $(filter amd64,$(1)),,_$(1))
# The architectures of the release tree: modules, commands and buildkitd
# (the action plugin and ensure-buildkit know the same four).
DIST_ARCHES := amd64 arm64 ppc64le s390x

.PHONY: all build build-all buildkitd-dist dist deps lint test test-unit test-integration \
	conformance bench demo clean test-seaweedfs test-swift

all: build

build: $(addprefix build-module-,$(MODULES)) build-commands

build-all:
	$(foreach a,$(DIST_ARCHES),$(MAKE) build ARCH=$(a) &&) true

build-module-%:
	@mkdir -p $(LIBRARY)
	GOOS=linux GOARCH=$(ARCH) $(GOBUILD) -o $(LIBRARY)/$*$(call arch_suffix,$(ARCH)) ./modules/$*
	@cp modules/$*/$*.yml $(LIBRARY)/$*.yml

build-commands:
	@mkdir -p bin
	$(if $(COMMANDS),$(GOBUILD) -o bin/ $(addprefix ./cmd/,$(COMMANDS)))

# buildkitd for every architecture, built once into the deps cache
# (BUILDKITD_DIST), for ensure-buildkit in the release tree.
buildkitd-dist:
	./tests/setup/deps.sh buildkitd-dist

dist: build-all buildkitd-dist
	DIST_ARCHES="$(DIST_ARCHES)" ./tests/setup/dist.sh

deps:
	./tests/setup/deps.sh

lint: 
	./tests/setup/deps.sh lint
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

test-unit:
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /tests/)

test-integration: dist
	$(GO) test -count=1 -timeout 30m ./tests/...

conformance: deps
	$(GO) test -count=1 -timeout 15m -run Conformance ./pkg/registry/... ./pkg/server/

test: deps lint test-unit test-integration

bench: deps build
	$(GO) test -run '^$$' -bench '$(or $(BENCH),.)' -benchtime 1x -timeout 90m ./bench/

demo: deps build
	$(GO) run ./internal/cmd/imagegate-demo

test-seaweedfs: deps
	./tests/setup/deps.sh seaweedfs
	IMAGEGATE_SEAWEEDFS=1 $(GO) test -count=1 -timeout 60m -run 'TestConformance|TestChunkedUploads|TestLaggingListings|TestReplicasShareABucket' ./pkg/registry/storage/s3/ ./pkg/server/

# The full suite on OpenStack Swift (Debian's all-in-one Swift, and
# Keystone): every driver test, the OCI conformance suite and two replicas
# on one container, the Keystone starter. Each test starts its own Swift;
# together they take about 15 minutes on 2 cores (5 minutes of CPU), so
# make test runs the smoke test only (testenv.RequireSwiftFull skips the
# rest): the storage conformance suite on Swift with large-object
# segments, bad settings, Swift stopping during a push, zuul-registry's
# registry.yaml on Swift behind Keystone, and TestDaemons' tempauth Swift.
test-swift: deps
	IMAGEGATE_SWIFT_FULL=1 $(GO) test -race -count=1 -timeout 60m ./pkg/registry/storage/swift/
	IMAGEGATE_SWIFT_FULL=1 $(GO) test -race -count=1 -timeout 60m -run 'Swift|Keystone|Zuul|TestReplicasShareAContainer' ./pkg/server/
	IMAGEGATE_SWIFT_FULL=1 $(GO) test -race -count=1 -timeout 30m -run 'TestDaemons/swift' ./internal/testenv/

clean:
	rm -rf bin dist $(LIBRARY)

# herd: `make test` runs every test (it installs what it needs first, as
# root on Debian); `make build` puts every binary in bin/.
SHELL := /bin/bash
MODULES := proto pkg services/server services/boots services/metadata services/bmc worker sandbox deploy
# Every main package: services/*/cmd/NAME and worker/cmd/NAME build bin/NAME.
CMDS = $(wildcard services/*/cmd/* worker/cmd/*)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/herd-metal/herd/pkg/version.Version=$(VERSION)
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build test deps vet check-proto proto bench-server bench-bmc bench-metadata bench-dhcp bench-files bench-tftp bench-storm bench-image action-images images osie osimage fuzz reliability ipxe sandbox sandbox-down test-e2e ui-screenshots bench-ui clean

all: build

build:
	@mkdir -p bin
	go build -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./,$(CMDS))

deps:
	./scripts/deps.sh

vet:
	@out=$$(gofmt -l $(MODULES)); [ -z "$$out" ] || { echo "not gofmt-formatted:"; echo "$$out"; exit 1; }
	go vet $(addsuffix /...,$(addprefix ./,$(MODULES)))
	go vet -tags bench $(BENCH_PKGS) ./services/bmc/bench ./services/server/internal/ui/bench
	@# Each module must build on its own (GOWORK=off), as the OSIE and OS
	@# image builds do: go.work hides a go.mod that is not tidy.
	@for m in $(MODULES); do \
		(cd $$m && GOWORK=off go mod tidy -diff >/dev/null) || { echo "$$m/go.mod is not tidy: cd $$m && GOWORK=off go mod tidy"; exit 1; }; \
	done
	@# Every shell script of the tree (*.sh, *.bash, a sh or bash #! line).
	./scripts/shellcheck.sh

# Regenerates into a scratch directory and fails when the committed code
# differs: the generated code must come from the committed .proto files.
check-proto:
	@rm -rf .tmp/proto && mkdir -p .tmp/proto
	./proto/generate.sh .tmp/proto
	@for f in $$(cd .tmp/proto && find . -type f); do \
		cmp -s .tmp/proto/$$f proto/$$f || { echo "proto/$$f is stale: run make proto and commit"; exit 1; }; \
	done; echo "generated proto code is current"

proto:
	./proto/generate.sh proto

# The benchmarks' own parsers and tables (their tests other than TestBench*).
BENCH_PKGS := ./services/server/bench ./services/metadata/bench ./services/boots/bench ./worker/actions/image2disk/bench ./sandbox/storm

test: deps check-proto vet
	go test $(GO_TEST_FLAGS) $(addsuffix /...,$(addprefix ./,$(MODULES)))
	go test -tags bench -count=1 -skip '^TestBench' $(BENCH_PKGS)
	$(MAKE) fuzz
	$(MAKE) test-e2e

# The sandbox as a test, in its default, UEFI and OVH variants one after
# the other (namespace herd-e2e, so a make sandbox left up is untouched),
# everything removed after each. A variant fails unless the workflow
# succeeded, the disk holds the image, the installed OS reported its host
# name and the services' metrics moved. compose deploys the services the
# operator's way (deploy/: generate-envrc.sh, setup.sh, docker-compose up)
# and also checks a herd-server crash and docker-compose down. Each powers
# its VM on through herd and the VM's BMC (ipmi_sim; --power ipmi, the
# default); qemu is the sandbox starting QEMU itself (--power qemu), and
# resets the VM once while writefile runs (--fault osie-reboot: the short
# form of make reliability's TestReliabilityOSIEReboot);
# replicas runs two herd-server replicas and SIGKILLs the first while
# image2disk streams (--server-replicas=2 --fault=kill-server).
# E2E_VARIANTS picks some.
E2E_VARIANTS ?= default uefi ovh compose qemu replicas
test-e2e: deps
	@build=true; for v in $(E2E_VARIANTS); do \
		case $$v in default) f=;; uefi) f=--uefi;; ovh) f=--ovh;; compose) f=--stack=compose;; ipmi) f=--power=ipmi;; qemu) f="--power=qemu --fault=osie-reboot --fault-during=writefile";; replicas) f="--server-replicas=2 --fault=kill-server";; *) echo "test-e2e: unknown variant $$v (default, uefi, ovh, compose, ipmi, qemu, replicas)"; exit 2;; esac; \
		echo "=== test-e2e $$v"; start=$$(date +%s); \
		go run ./sandbox/cmd/sandbox up --repo $(CURDIR) --dir $(CURDIR)/.tmp/sandbox-e2e --netns herd-e2e \
			--down --timeout 10m --build=$$build $$f || { echo "=== test-e2e $$v FAILED"; exit 1; }; \
		echo "=== test-e2e $$v passed in $$(( $$(date +%s) - start )) s"; build=false; \
	done

# The web UI's fleet and machine pages at 1280x800 into docs/ui/ (a real
# herd-server, PostgreSQL and chromium; services/server/e2e TestUIScreenshots).
ui-screenshots: deps
	@mkdir -p docs/ui
	cd services/server && HERD_UI_SCREENSHOTS=$(CURDIR)/docs/ui go test -count=1 -run '^TestUIScreenshots$$' ./e2e/

# The web UI with 10,000 machines in chromium: the fleet page's load time,
# and how it keeps up while 1,000 workflows report (docs/benchmarks.md).
bench-ui: deps
	go test -tags bench -count=1 -timeout 30m -run TestBenchUI -v ./services/server/internal/ui/bench -args -out $(CURDIR)/docs/benchmarks.md

# A short run of every fuzzer on what comes from outside (packets, requests,
# files); FUZZTIME=10m for a long one. Seeds live in the tests.
FUZZTIME ?= 5s
FUZZERS := \
	services/boots/internal/dhcp:FuzzHandle \
	services/boots/internal/dhcp:FuzzParseInto \
	services/boots/internal/httpd:FuzzMachineRoute \
	services/boots/internal/syslog:FuzzParse \
	services/metadata/internal/clientip:FuzzClient \
	services/metadata/internal/httpapi:FuzzServe \
	services/boots/internal/tftp:FuzzRequest \
	pkg/kcmdline:FuzzSplit \
	worker/osie/init:FuzzParseCmdline \
	pkg/spec:FuzzParseHardware \
	pkg/spec:FuzzValidateTemplate \
	pkg/spec:FuzzRenderTemplate \
	services/server/e2e:FuzzREST \
	services/server/e2e:FuzzWorkflowData
fuzz:
	@FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh $(FUZZERS)

# Every fault and bad-input test (TestReliability*, pkg/reliability) at
# full size, then docs/reliability.md from what they recorded. make test
# runs the same tests in their short form.
RELIABILITY_OUT := $(CURDIR)/.tmp/reliability.jsonl
reliability: deps build
	@mkdir -p .tmp && rm -f $(RELIABILITY_OUT)
	HERD_RELIABILITY=full HERD_RELIABILITY_OUT=$(RELIABILITY_OUT) \
		go test -count=1 -timeout 90m -run '^TestReliability' -v $(addsuffix /...,$(addprefix ./,$(MODULES)))
	go run ./pkg/reliability/cmd/report -in $(RELIABILITY_OUT) -commit $(REVISION) -out $(CURDIR)/docs/reliability.md

bench-server: deps build
	go test -tags bench -count=1 -timeout 30m -run TestBenchServer -v ./services/server/bench -args -out $(CURDIR)/docs/benchmarks.md

# BMC jobs end to end: herd-server, herd-bmc and 20 ipmi_sim BMCs; how long
# a job takes and how many run at once (docs/benchmarks.md).
bench-bmc: deps
	go test -tags bench -count=1 -timeout 30m -run TestBenchBMC -v ./services/bmc/bench -args -out $(CURDIR)/docs/benchmarks.md

# image2disk against `curl | zstd -d | dd oflag=direct` per format, to a
# loop device over tmpfs (docs/benchmarks.md).
bench-image: deps
	./scripts/deps.sh worker/actions/image2disk/bench/deps.txt
	go test -tags bench -count=1 -timeout 60m -run TestBenchImage -v ./worker/actions/image2disk/bench -args -out $(CURDIR)/docs/benchmarks.md

bench-metadata: deps
	./scripts/deps.sh services/metadata/bench/deps.txt
	go test -tags bench -count=1 -timeout 30m -run TestBenchMetadata -v ./services/metadata/bench -args -out $(CURDIR)/docs/benchmarks.md

# The core action images (worker/actions), built with the local Docker
# engine; ACTION_REGISTRY=host:port also pushes them there.
ACTIONS := image2disk writefile reboot
ACTION_REGISTRY ?=
ACTION_TAG ?= $(VERSION)
action-images:
	@for a in $(ACTIONS); do \
		mkdir -p .tmp/actions/$$a && \
		CGO_ENABLED=0 go build -trimpath -ldflags '-s -w $(LDFLAGS)' -o .tmp/actions/$$a/$$a ./worker/actions/$$a && \
		cp worker/actions/$$a/Dockerfile .tmp/actions/$$a/ && \
		docker build -t $(if $(ACTION_REGISTRY),$(ACTION_REGISTRY)/)$$a:$(ACTION_TAG) .tmp/actions/$$a || exit 1; \
		[ -z "$(ACTION_REGISTRY)" ] || docker push $(ACTION_REGISTRY)/$$a:$(ACTION_TAG) || exit 1; \
	done

# The images of deploy/'s stack (deploy/images/README.md), built with the
# engine DOCKER_HOST names, classic builder, no network: herd-server (with
# the herd CLI), herd-boots, herd-metadata and herd-bmc FROM scratch from static
# binaries, every time; postgres and registry from Debian's packages
# (mmdebstrap), kept once built: IMAGE_REBUILD=1 builds them again. IMAGES
# picks some. Prints each image's size.
IMAGE_REPO ?= herd
IMAGE_TAG ?= $(VERSION)
IMAGE_REBUILD ?= 0
IMAGES ?=
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_SOURCE ?= https://github.com/herd-metal/herd
IMAGE_LDFLAGS := -s -w $(LDFLAGS) -X github.com/herd-metal/herd/pkg/version.Commit=$(REVISION)
images:
	@./scripts/deps.sh deploy/images/deps.txt
	@mkdir -p .tmp/images/bin
	CGO_ENABLED=0 go build -trimpath -ldflags '$(IMAGE_LDFLAGS)' -o .tmp/images/bin/ \
		./services/server/cmd/herd-server ./services/server/cmd/herd ./services/boots/cmd/herd-boots ./services/metadata/cmd/herd-metadata \
		./services/bmc/cmd/herd-bmc
	@IMAGE_REPO='$(IMAGE_REPO)' IMAGE_TAG='$(IMAGE_TAG)' IMAGE_REBUILD='$(IMAGE_REBUILD)' BIN_DIR=$(CURDIR)/.tmp/images/bin \
		VERSION='$(VERSION)' REVISION='$(REVISION)' IMAGE_SOURCE='$(IMAGE_SOURCE)' WORK_DIR=$(CURDIR)/.tmp/images \
		./deploy/images/build.sh $(IMAGES)

bench-dhcp: deps
	./scripts/deps.sh services/boots/bench/deps.txt
	go test -tags bench -count=1 -timeout 40m -run TestBenchDHCP -v ./services/boots/bench -args -out $(CURDIR)/docs/benchmarks.md

# herd-boots' /osie/ downloads against nginx (same files, same clients,
# loopback), 1, 50 and 200 clients, three rounds (docs/benchmarks.md).
bench-files: deps
	./scripts/deps.sh services/boots/bench/deps.txt
	go test -tags bench -count=1 -timeout 60m -run TestBenchFiles -v ./services/boots/bench -args -out $(CURDIR)/docs/benchmarks.md

# herd-boots' TFTP against tftpd-hpa (Debian's iPXE binaries, same clients,
# loopback), 1, 50 and 200 clients, three rounds (docs/benchmarks.md).
bench-tftp: deps
	./scripts/deps.sh services/boots/bench/deps.txt
	go test -tags bench -count=1 -timeout 40m -run TestBenchTFTP -v ./services/boots/bench -args -out $(CURDIR)/docs/benchmarks.md

# A boot storm of STORM_MACHINES simulated machines through DHCP, iPXE
# scripts, OSIE files, the worker RPCs and metadata (docs/benchmarks.md).
STORM_MACHINES ?= 100,1000
bench-storm: deps
	go test -tags bench -count=1 -timeout 60m -run TestBenchStorm -v ./sandbox/storm -args -machines $(STORM_MACHINES) -out $(CURDIR)/docs/benchmarks.md

# The iPXE binaries herd-boots serves (--ipxe-dir), from Debian's ipxe
# package, in one directory: bin/ipxe.
IPXE_FILES := undionly.kpxe ipxe.efi snponly.efi
ipxe: deps
	@mkdir -p bin/ipxe && for f in $(IPXE_FILES); do cp -L /usr/lib/ipxe/$$f bin/ipxe/ || exit 1; done
	@ls -l bin/ipxe

# The OSIE (in-memory OS): bin/osie/vmlinuz and bin/osie/initramfs.img,
# built offline from Debian's packages (see worker/osie/README.md).
osie:
	OUT=$(CURDIR)/bin/osie ./worker/osie/build.sh

# The OS disk image the sandbox installs: bin/osimage/disk.img(.gz),
# built offline from Debian's packages (see sandbox/osimage/README.md).
osimage:
	OUT=$(CURDIR)/bin/osimage ./sandbox/osimage/build.sh

# Provisions a QEMU VM end to end through every herd service in the network
# namespace herd-sbx (see sandbox/README.md); the services stay up until
# make sandbox-down.
SANDBOX_DIR ?= /tmp/herd-sandbox
# Variants: UEFI=1 (OVMF), OVH=1 (provider network and iPXE script
# first), MACHINES=N (N VMs at once), STACK=compose (the services deployed
# with deploy/'s generate-envrc.sh, setup.sh and docker-compose),
# POWER=qemu (the sandbox starts the VMs, not herd through their BMCs).
sandbox: deps
	go run ./sandbox/cmd/sandbox up --repo $(CURDIR) --dir $(SANDBOX_DIR) \
		--uefi=$(if $(filter 1,$(UEFI)),true,false) --ovh=$(if $(filter 1,$(OVH)),true,false) --machines=$(or $(MACHINES),1) \
		--stack=$(or $(STACK),process)

sandbox-down:
	go run ./sandbox/cmd/sandbox down --repo $(CURDIR) --dir $(SANDBOX_DIR)

clean:
	rm -rf bin .tmp

# hearth — run `make help` for the targets.
SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BUILD_DATE ?= $(shell git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X github.com/hearth-energy/hearth.Version=$(VERSION) -X github.com/hearth-energy/hearth.BuildDate=$(BUILD_DATE)
BIN     := bin

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build hearth and hearthsim for this machine into bin/
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hearth ./cmd/hearth
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hearthsim ./cmd/hearthsim

demo: build ## run the simulator, an embedded broker and the agent, and show live telemetry (Ctrl-C stops)
	$(BIN)/hearthsim demo --agent $(BIN)/hearth

deps: ## install what the tests need when missing (mosquitto, socat, python3-pymodbus, chromium; root or sudo)
	bash scripts/deps.sh

test: deps ## run every test against real Mosquitto, ptys and SQLite files (installs what they need first)
	$(GO) test -race -count=1 -timeout 12m ./...

rabbitmq: ## the broker contract checks against a RabbitMQ node of the tests' own (installs rabbitmq-server; the node boots in 10-60 s)
	bash scripts/deps.sh rabbitmq
	HEARTH_RABBITMQ=1 $(GO) test -count=1 -timeout 5m -run '^TestSessionContract$$' -v ./uplink 2>&1 | grep -E '^(---|    ---|ok|FAIL|PASS)|rabbitmq'; exit $${PIPESTATUS[0]}

screenshot: deps ## the local page in headless Chromium, saved as docs/img/local-page.png for the README
	HEARTH_SCREENSHOT=$(CURDIR)/docs/img/local-page.png $(GO) test -count=1 -run '^TestLocalPageInChromium$$' ./e2e/

vet: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

check: vet test build ## vet, test and build: what must pass before a commit

generate: ## regenerate the SunSpec model tables from ../shared/sunspec
	$(GO) run ./drivers/sunspec/gen -src ../shared/sunspec -out drivers/sunspec/models_gen.go

release: ## binaries, .debs and SHA256SUMS for amd64, arm64, armv7, armv6 in dist/, each checked under qemu-user
	bash scripts/release.sh --version $(VERSION)
	bash scripts/selfcheck.sh

release-check: release ## release, then the amd64 .deb in a fresh Debian root: install/upgrade/rollback/remove, and booted under systemd
	bash scripts/debtest.sh
	bash scripts/boottest.sh

rss: ## resident memory of the arm64 agent under qemu with two simulated devices at 1 Hz (needs make release)
	bash scripts/selfcheck.sh --rss arm64 --seconds 120

faults: ## run the fault-injection scenarios in full (minutes; make test runs them short)
	HEARTH_FAULTS_FULL=1 $(GO) test -count=1 -v -timeout 60m ./faults/

powercut: ## power cuts under a real agent on a disk that loses all it did not sync: 50 cuts, then a build without the fsyncs, which must be caught
	HEARTH_POWERCUT_CUTS=50 $(GO) test -count=1 -v -timeout 30m -run '^TestPowerCut$$' ./faults/
	@echo "powercut: the agent built without its fsyncs (-tags nofsync) must fail the same checks"
	@log=$$(mktemp); if HEARTH_POWERCUT_NOFSYNC=1 HEARTH_POWERCUT_CUTS=20 $(GO) test -count=1 -v -timeout 30m -run '^TestPowerCut$$' ./faults/ >$$log 2>&1; then \
		tail -20 $$log; echo "powercut: FAIL: 20 cuts under an agent without fsyncs and nothing was caught"; exit 1; fi; \
	grep -E 'check [a-z ]+( after cut [0-9]+)?:' $$log | grep -v ': ok$$' | head -10; \
	grep -qE 'went back|carried two different readings|neither arrived nor' $$log || { tail -40 $$log; echo "powercut: FAIL: the nofsync run failed for another reason"; exit 1; }; \
	rm -f $$log; echo "powercut: without the fsyncs a power cut is caught: ok"

bench: ## benchmarks and end-to-end measurements into bench/REPORT.md and bench/results.json (~30 min)
	ulimit -n 65536 2>/dev/null; $(GO) run ./bench

clean: ## remove build output
	rm -rf $(BIN) dist

.PHONY: help deps build demo test rabbitmq vet check generate clean release release-check rss faults powercut bench

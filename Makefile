# Sonde: `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)
SWIFT ?= swift

.PHONY: deps build release test demo bench drill clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Serial: many suites measure real timings (time-outs, ttfb), which parallel CPU load would skew.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --no-parallel

demo: release
	@scripts/demo.sh

# Benchmarks (release build; BENCHMARKS.md). They report numbers and never fail.
bench: deps
	@scripts/bench.sh

# Full reliability drills (RELIABILITY.md); the quick versions run in `make test`.
drill: deps
	@scripts/drill.sh

clean:
	rm -rf .build

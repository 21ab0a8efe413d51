# Sonde: `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)
SWIFT ?= swift

.PHONY: deps build release test demo demo-ha bench drill install deb clean scenarios

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

# Release binaries carry the Swift runtime (--static-swift-stdlib): a host needs only libcurl,
# libyaml and libc, and the agent maps ~3 MiB less than with the shared Swift libraries.
# Product by product: a plain `swift build` also links dependencies' dynamic library products
# (GRDB's GRDB-dynamic), which cannot link against the static Swift runtime.
build_release = for p in $(1); do $(SWIFT) build -c release --static-swift-stdlib --product $$p || exit 1; done
release: deps
	$(call build_release,sonde-agent sonde-collector sonde sonde-sim)

# Serial: many suites measure real timings (time-outs, ttfb), which parallel CPU load would skew.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) package generate-manual --help > /dev/null  # the tool package.sh makes manual pages with
	$(SWIFT) test --skip-build --no-parallel

demo: release
	@scripts/demo.sh

# Two collectors on one PostgreSQL behind haproxy, 6 agents; the leader is SIGKILLed during a
# platform incident (docs/scaling.md). Not part of `make test` (the HA drills are).
demo-ha: release
	@scripts/demo-ha.sh

# Benchmarks (release build; BENCHMARKS.md). They report numbers and never fail.
# The agent's (vs blackbox_exporter, timing, scale, detection) first: bench.sh folds them in.
bench: deps
	-@scripts/bench-agent.sh
	@scripts/bench.sh

# Full reliability drills (RELIABILITY.md); the quick versions run in `make test`.
# The agent's drills first (RELIABILITY-agent.md), folded into RELIABILITY.md by drill.sh.
drill: deps
	@scripts/drill-agent.sh; agent=$$?; scripts/drill.sh && exit $$agent

# Stripped release binaries, systemd units, example configs and docs (docs/install.md).
# /etc and /var go under DESTDIR alone; programs and docs under DESTDIR/PREFIX.
PREFIX ?= /usr/local
install: release
	@scripts/package.sh install "$(DESTDIR)" "$(PREFIX)"

# sonde-agent, sonde-collector and sonde-cli .deb packages in .build/deb (dpkg-deb; docs/install.md).
deb: release
	@scripts/package.sh deb .build/deb

# Verdict scenarios of issue 10 (VERDICTS.md): a real sim, collector and 6 agents (3 regions × 2,
# each behind its own relay) at 2 s intervals, 18 scenarios × 5 trials. About 70 minutes on 2 cores
# (a trial ≈ 40 s, the stopped-agent scenario's ≈ 3 min); `timeout` bounds it at 90, and
# sonde-scenarios stops every process it started on failure, Ctrl-C or that timeout. Narrow it with
# e.g. SCENARIO_ARGS="--only login-down,stuck-everywhere --trials 1"; the quick version runs in `make test`.
SCENARIO_LABEL ?= Current engine
SCENARIO_ARGS ?=
scenarios: deps
	$(call build_release,sonde-sim sonde-collector sonde-agent sonde-scenarios)
	timeout -s INT -k 30s 90m .build/release/sonde-scenarios --label "$(SCENARIO_LABEL)" \
	  --note "Engine: $$(git rev-parse --abbrev-ref HEAD) at $$(git rev-parse --short HEAD)." \
	  --events-log .build/scenario-events.log $(SCENARIO_ARGS)

clean:
	rm -rf .build

#!/usr/bin/env bash
# The agent's benchmarks (issues 4, 11): cost vs Prometheus blackbox_exporter, the whole pipeline at
# 1/10/100 probes/s vs blackbox_exporter + Prometheus, timing accuracy vs curl,
# scale of one agent, end-to-end detection latency. Installs what is missing (nginx,
# prometheus-blackbox-exporter), builds release, runs every benchmark (medians of 3 runs) and
# writes .bench/agent-*.md and BENCHMARKS-agent.md. Reports numbers; never fails on a slow one.
#
#   scripts/bench-agent.sh                     # everything (about 15 minutes on 2 cores)
#   SONDE_BENCH_ONLY=timing,scale scripts/bench-agent.sh
#   SONDE_BENCH_ARGS="--trials 5" scripts/bench-agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v prometheus-blackbox-exporter >/dev/null 2>&1 || need+=(prometheus-blackbox-exporter)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)  # scrapes blackbox_exporter in the pipeline benchmark
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(gcc)  # builds the libcurl floor (scripts/bench/curl_floor.c)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  # policy-rc.d keeps the packages' own services from starting: the benchmark runs its own copies.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
export PATH=$PATH:/usr/sbin

swift build -c release --static-swift-stdlib --product sonde-agent
swift build -c release --static-swift-stdlib --product sonde-collector
swift build -c release --static-swift-stdlib --product sonde-sim
swift build -c release --static-swift-stdlib --product sonde-agent-bench
swift build -c release --static-swift-stdlib --product sonde-memory-floor
swift build -c release --static-swift-stdlib --product sonde-swift-floor

mkdir -p .bench
# shellcheck disable=SC2086
python3 scripts/bench/agent_bench.py --bin .build/release --out .bench --only "${SONDE_BENCH_ONLY:-cost,pipeline,timing,scale,detection}" ${SONDE_BENCH_ARGS:-}

{
  echo "# Agent benchmarks"
  echo
  echo "Measured by \`scripts/bench-agent.sh\` (release build; each row is reproduced by that command,"
  echo "or one benchmark alone by \`SONDE_BENCH_ONLY=<cost|pipeline|timing|scale|detection> scripts/bench-agent.sh\`)."
  echo "Numbers only: benchmarks never fail CI."
  echo
  for name in cost pipeline timing scale detection; do
    [ -f ".bench/agent-$name.md" ] && { cat ".bench/agent-$name.md"; echo; }
  done
} >BENCHMARKS-agent.md.new
# Keep the hand-written notes (everything after the marker) of an earlier BENCHMARKS-agent.md.
if [ -f BENCHMARKS-agent.md ] && grep -q '^<!-- notes -->' BENCHMARKS-agent.md; then
  sed -n '/^<!-- notes -->/,$p' BENCHMARKS-agent.md >>BENCHMARKS-agent.md.new
fi
mv BENCHMARKS-agent.md.new BENCHMARKS-agent.md
echo "wrote BENCHMARKS-agent.md"

#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the parsers that read untrusted input, for a fixed budget
# per target. Part of `make drill` (scripts/drill.sh); alone: `scripts/fuzz.sh [seconds per target]`.
# Builds the Fuzz/ package with `-sanitize=fuzzer` (its own .build, so the main build is
# untouched), seeds each corpus from the project's own files, and writes a Markdown report
# ($FUZZ_REPORT, default .bench/fuzz.md). Exit status 1 when a target crashed: the input that did
# it is kept in .bench/fuzz/<target>/ (re-run it with `Fuzz/.build/release/<target> <file>`).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
seconds=${1:-${FUZZ_SECONDS:-120}}
report=${FUZZ_REPORT:-.bench/fuzz.md}
work=.bench/fuzz
mkdir -p "$work" "$(dirname "$report")"

echo "== building the fuzz targets (release, -sanitize=fuzzer)"
swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library || exit 1

# target name | seed files (globs) | what it fuzzes
targets=(
  "FuzzProbeScript|probes/*/*.yaml Tests/ProbeEngineTests/Corpus/*.yaml Tests/ProbeEngineTests/Corpus/*/*.yaml|the probe-script parser (\`ProbeLoader.parse\`): YAML → definition or file:line diagnostics"
  "FuzzPushBatch|Fuzz/Seeds/push-batch/*.json|the collector's push decoder (\`PushBatchDecoder\`), differential: what it accepts JSONDecoder accepts as the same batch; each result's byte range decodes to that result"
)

status=0
rows=()
for entry in "${targets[@]}"; do
  IFS='|' read -r name seeds what <<<"$entry"
  dir="$work/$name"
  mkdir -p "$dir/corpus"
  # shellcheck disable=SC2086
  for f in $seeds; do [ -f "$f" ] && cp "$f" "$dir/corpus/seed-$(echo "$f" | tr '/' '_')"; done
  seeded=$(ls "$dir/corpus" | wc -l)
  echo "== $name: $seconds s, $seeded inputs in the corpus"
  "Fuzz/.build/release/$name" "$dir/corpus" -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$dir/" >"$dir/log.txt" 2>&1
  rc=$?
  runs=$(grep -m1 '^stat::number_of_executed_units' "$dir/log.txt" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+' "$dir/log.txt" | tail -1 | grep -o 'cov: [0-9]*' | awk '{print $2}')
  corpus=$(ls "$dir/corpus" | wc -l)
  crashes=$(ls "$dir" | grep -cE '^(crash|leak|timeout|oom)-' || true)
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    verdict="**FAIL** (exit $rc; $crashes input(s) kept in $dir/)"
    grep -E 'Fatal error|ERROR:|SUMMARY' "$dir/log.txt" | head -5
  else
    verdict="PASS"
  fi
  echo "== $name: ${runs:-?} inputs, coverage ${cov:-?} edges, corpus $seeded → $corpus, $verdict"
  rows+=("| \`$name\` | $what | $seconds s | ${runs:-?} | ${cov:-?} | $seeded → $corpus | $verdict |")
done

{
  echo "### Drill 5c: coverage-guided fuzzing (libFuzzer) — $([ "$status" -eq 0 ] && echo PASS || echo FAIL)"
  echo
  echo "Each target is a Swift libFuzzer harness in \`Fuzz/\` (built with \`-sanitize=fuzzer\`, release), run for a fixed budget"
  echo "from a corpus seeded with the project's own files. PASS: no crash, trap, time-out (10 s) or out-of-memory (2 GiB) on any input,"
  echo "and each harness's own checks held. Reproduce: \`scripts/fuzz.sh $seconds\`."
  echo
  echo "| target | what | budget | inputs run | coverage (edges) | corpus (start → end) | result |"
  echo "|---|---|---:|---:|---:|---:|---|"
  printf '%s\n' "${rows[@]}"
} >"$report"
echo "wrote $report"
exit "$status"

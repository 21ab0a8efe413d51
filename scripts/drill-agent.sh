#!/usr/bin/env bash
# The agent's reliability drills, full size (issue 4): 50 SIGKILLs at random moments, the collector
# unreachable for 5 minutes, the spool's disk full and read-only (a real tmpfs: needs root). The
# quick versions of the same tests run in `make test` (AgentDrillTests). Writes
# .bench/agent-drills.md and RELIABILITY-agent.md; exits 1 if a drill fails.
#
#   scripts/drill-agent.sh                                   # full: about 8 minutes
#   SONDE_DRILL_KILLS=10 SONDE_DRILL_OUTAGE_SECONDS=30 scripts/drill-agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
export SONDE_DRILL_KILLS=${SONDE_DRILL_KILLS:-50}
export SONDE_DRILL_OUTAGE_SECONDS=${SONDE_DRILL_OUTAGE_SECONDS:-300}

swift build --build-tests
mkdir -p .bench
status=0
swift test --skip-build --no-parallel --filter AgentDrillTests 2>&1 | tee .bench/agent-drills.log || status=$?

python3 - "$status" <<'PY'
import sys, os, time
status = int(sys.argv[1])
rows = [dict(kv.split("=", 1) for kv in line.strip().split("|")[2:]) | {"drill": line.split("|")[1]}
        for line in open(".bench/agent-drills.log") if line.startswith("DRILL|")]
names = {
    "sigkill": "1. SIGKILL the agent at random moments while results are spooled and pushed",
    "outage": "3. Collector unreachable, then back",
    "disk_full": "6. Spool's disk fills up mid-run (tmpfs, real ENOSPC), then space again",
    "disk_readonly": "6. Spool's disk read-only at start (tmpfs remounted ro, real EROFS), collector down, memory_limit 5",
}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
md = ["### Agent drills", "",
      f"`SONDE_DRILL_KILLS={os.environ['SONDE_DRILL_KILLS']} SONDE_DRILL_OUTAGE_SECONDS={os.environ['SONDE_DRILL_OUTAGE_SECONDS']} scripts/drill-agent.sh`"
      f" (debug build; real `sonde-agent run`, real `sonde-collector serve` on SQLite, counts from the collector's `GET /v1/results`).", "",
      "| drill | size | produced | stored | duplicates | missing | dropped (reported) | result |", "|---|---|---|---|---|---|---|---|"]
for r in rows:
    size = {"sigkill": f"{r.get('kills')} SIGKILLs", "outage": f"{r.get('outage_s')} s down"}.get(r["drill"], f"memory_limit {r.get('memory_limit', '10000')}")
    md.append(f"| {names.get(r['drill'], r['drill'])} | {size} | {r.get('produced')} | {r.get('stored')} | {r.get('duplicates', 0)} | "
              f"{r.get('missing', '—')} | {r.get('dropped', 0)} | {'**pass**' if r.get('pass') == 'true' else '**FAIL**'} |")
md += ["", f"Machine: {cpu}, {os.cpu_count()} cores. Run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; test run exit status {status}.", ""]
open(".bench/agent-drills.md", "w").write("\n".join(md))
print("\n".join(md))
PY

{
  echo "# Agent reliability drills"
  echo
  echo "Pass/fail with counts. Quick versions run in \`make test\` (\`AgentDrillTests\`: 5 SIGKILLs, a 10 s"
  echo "outage, the disk drills); full versions: \`scripts/drill-agent.sh\`."
  echo
  cat .bench/agent-drills.md
} >RELIABILITY-agent.md.new
if [ -f RELIABILITY-agent.md ] && grep -q '^<!-- notes -->' RELIABILITY-agent.md; then
  sed -n '/^<!-- notes -->/,$p' RELIABILITY-agent.md >>RELIABILITY-agent.md.new
fi
mv RELIABILITY-agent.md.new RELIABILITY-agent.md
echo "wrote RELIABILITY-agent.md"
exit "$status"

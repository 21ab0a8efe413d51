#!/usr/bin/env bash
# Sonde end to end on one machine: sonde-sim in 3 regions, a collector on SQLite, two agents per
# region (each behind its own cuttable TCP relay, its "network"), and a webhook receiver. Walks
# through a local fault, a regional outage and a platform-wide partial outage, printing verdicts
# and webhooks. Cleans up every process it started. Run by `make demo` after a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SONDE_BIN:-.build/release}
INTERVAL=${SONDE_DEMO_INTERVAL:-2s}
work=$(mktemp -d /tmp/sonde-demo.XXXXXX)
# shellcheck source=scripts/demo-common.sh
source scripts/demo-common.sh

webhook_seen() {  # type [component] [scope]
  python3 - "$work/webhooks.jsonl" "$@" <<'PY'
import json, sys
path, kind = sys.argv[1], sys.argv[2]
component = sys.argv[3] if len(sys.argv) > 3 else None
scope = sys.argv[4] if len(sys.argv) > 4 else None
try:
    lines = open(path).read().splitlines()
except FileNotFoundError:
    sys.exit(1)
for line in lines:
    e = json.loads(line)["event"]
    if e.get("type") == kind and (component is None or e.get("component") == component or e.get("agent") == component) \
            and (scope is None or e.get("scope") == scope):
        sys.exit(0)
sys.exit(1)
PY
}

open_incidents() {
  "$BIN/sonde" status --exit-zero --json --collector "$COLLECTOR" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["open_incidents"]))'
}
all_operational() {  # every component operational, no open incident, every agent ok
  "$BIN/sonde" status --exit-zero --json --collector "$COLLECTOR" | python3 -c '
import json, sys
s = json.load(sys.stdin)
comps = s["components"]
ok = comps and all(c["status"] == "operational" for c in comps) and not s["open_incidents"]
sys.exit(0 if ok and s["agents"]["ok"] == s["agents"]["total"] else 1)'
}
agent_state() {  # agent → prints its health state
  "$BIN/sonde" agents --json --collector "$COLLECTOR" | python3 -c "
import json, sys
print(next((a.get('state') or '?' for a in json.load(sys.stdin)['agents'] if a['id'] == '$1'), '?'))"
}
show_status() { "$BIN/sonde" status --exit-zero --collector "$COLLECTOR" | sed 's/^/    /'; }

[ -x "$BIN/sonde-agent" ] || die "no release build in $BIN: run 'make demo' (it builds first)"
export SONDE_SIM_PASSWORD=probe-password

say "Starting sonde-sim (regions eu, us, ap), a webhook receiver and a collector in $work"
launch sim '^ap ' "$BIN/sonde-sim" --regions eu,us,ap --batch-pace 300ms
declare -A region_url
while read -r region url; do region_url[$region]=$url; done <"$work/sim.log"
sed 's/^/    /' "$work/sim.log"
SIM=${region_url[eu]}

launch receiver '^webhook-receiver ' python3 -u scripts/webhook_receiver.py demo-secret "$work/webhooks.jsonl"
RECEIVER=$(awk '{print $2}' "$work/receiver.log")
tail -n +2 -f "$work/receiver.log" &   # webhooks appear in the timeline as they arrive
pids+=($!)

agents=(eu-1 eu-2 us-1 us-2 ap-1 ap-2)
for id in "${agents[@]}"; do "$BIN/sonde-agent" keygen --out "$work/$id.key" >/dev/null; done

# HTTPS with a private CA made now, and a read token for the `sonde` calls below, as an operator
# would set them up (docs/collector.md, "Security").
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj '/CN=Sonde demo CA' \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null || die "openssl could not make the demo CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=localhost' \
  -keyout "$work/collector.key" -out "$work/collector.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/collector.ext"
openssl x509 -req -in "$work/collector.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
  -extfile "$work/collector.ext" -out "$work/collector.crt" 2>/dev/null || die "openssl could not sign the demo certificate"
chmod 600 "$work/collector.key"
SONDE_TOKEN=$(openssl rand -hex 32)
export SONDE_TOKEN SONDE_CA_FILE="$work/ca.crt"
token_sha256=$(printf %s "$SONDE_TOKEN" | sha256sum | cut -d' ' -f1)

cat >"$work/collector.yaml" <<YAML
listen: {host: 127.0.0.1, port: 0, tls: {cert: $work/collector.crt, key: $work/collector.key}}
tokens: [{name: demo, role: read, sha256: $token_sha256}]
status_page: {public: true}
database: $work/collector.db
YAML
append_collector_common "$work/collector.yaml"
launch collector 'Collector listening' "$BIN/sonde-collector" serve --config "$work/collector.yaml"
port=$(grep -ho 'http.port=[0-9]*' "$work/collector.log" "$work/collector.err" | head -1 | cut -d= -f2)
COLLECTOR=${port:+https://localhost:$port}
[ -n "$COLLECTOR" ] || die "could not read the collector's address"
note "collector $COLLECTOR (HTTPS, private CA $work/ca.crt; public status page: $COLLECTOR/; sonde uses SONDE_TOKEN and SONDE_CA_FILE)"

say "Starting two agents per region, each behind its own relay (its 'network'), probes every $INTERVAL"
declare -A relay_pid
for id in "${agents[@]}"; do
  region=${id%-*}
  target=${region_url[$region]#http://}
  launch "relay-$id" '^relay ' "$BIN/sonde-sim" relay --listen 127.0.0.1:0 --to "$target"
  relay_pid[$id]=${pids[-1]}
  relay_url=$(awk '{print $2}' "$work/relay-$id.log")
  cat >"$work/$id.yaml" <<YAML
agent: {id: $id, region: $region}
collector: {url: $COLLECTOR, ca_file: $work/ca.crt, key: $work/$id.key, batch_size: 100, flush_interval: 200ms, backoff: {base: 200ms, cap: 2s}}
spool: {path: $work/spool-$id}
probes: [$PWD/probes/sim]
variables:
  base_url: $relay_url
  batch_poll_every: 300ms
  finalizing_limit: 3s
  latency_degraded_after: 400ms
scheduling: {interval: $INTERVAL, jitter: 0.1}
YAML
  "$BIN/sonde-agent" run --config "$work/$id.yaml" >"$work/agent-$id.log" 2>&1 &
  pids+=($!)
  note "agent $id ($region) → relay $relay_url → sim ${region_url[$region]}"
done

say "1. All healthy: waiting for every component to be operational"
wait_for 90 all_operational || die "components did not become operational: $("$BIN/sonde" status --exit-zero --collector "$COLLECTOR")"
show_status

say "2. A local fault: agent eu-1's network is cut (its relay stops)"
kill -USR1 "${relay_pid[eu-1]}"
wait_for 60 webhook_seen agent.local_fault eu-1 || die "no agent.local_fault for eu-1"
note "eu-1 is $(agent_state eu-1); open incidents: $(open_incidents) (a local fault never opens one)"
[ "$(open_incidents)" = 0 ] || die "a local fault opened an incident"
show_status
kill -USR2 "${relay_pid[eu-1]}"
note "eu-1's network restored; waiting for it to be ok again"
wait_for 60 all_operational || die "eu-1 did not recover"
wait_for 60 webhook_seen agent.recovered eu-1 || die "no agent.recovered for eu-1"
note "eu-1 is $(agent_state eu-1) (agent.recovered sent: its local-fault alert is over)"

say "3. A regional outage: uploads in region us fail as 'expired' right after upload"
"$BIN/sonde-sim" fault set --sim "$SIM" --type file_expired --component files --region us | sed 's/^/    /'
wait_for 60 webhook_seen incident.opened files region || die "no regional incident for files"
show_status
"$BIN/sonde-sim" fault clear --sim "$SIM" --all >/dev/null
note "fault cleared; waiting for the incidents to resolve"
wait_for 90 webhook_seen incident.resolved files || die "the files incident did not resolve"
wait_for 90 all_operational || die "not everything recovered after the regional outage"

say "4. A platform-wide partial outage: batches stuck in 'finalizing' in every region"
"$BIN/sonde-sim" fault set --sim "$SIM" --type batch_stuck --state finalizing --component batch | sed 's/^/    /'
wait_for 60 webhook_seen incident.opened batch platform || die "no platform incident for batch"
show_status
note "it gets worse: batch creation now answers 503 everywhere"
"$BIN/sonde-sim" fault set --sim "$SIM" --type error --status 503 --component batch | sed 's/^/    /'
wait_for 60 webhook_seen incident.updated batch || die "the batch incident was not updated"
show_status

say "5. Recovery: faults cleared"
"$BIN/sonde-sim" fault clear --sim "$SIM" --all >/dev/null
wait_for 120 webhook_seen incident.resolved batch || die "the batch incident did not resolve"
wait_for 60 all_operational || die "components did not return to operational"
show_status

say "Webhooks received: $(grep -c '^  webhook ' "$work/receiver.log") (signatures: $(grep -c 'signature=valid' "$work/receiver.log") valid, $(grep -c 'signature=INVALID' "$work/receiver.log") invalid; duplicates: $(grep -c DUPLICATE "$work/receiver.log"))"
say "Demo complete in $(( $(date +%s) - start )) s. Status page was at $COLLECTOR/ (stopped now)."

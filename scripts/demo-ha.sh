#!/usr/bin/env bash
# `make demo-ha`: several collectors on one PostgreSQL. A throwaway PostgreSQL (initdb in a temp
# folder, run as `nobody` when started as root), two collectors behind haproxy (health-checked on
# /healthz), sonde-sim in 3 regions and 6 agents pushing through haproxy. During a platform-wide
# incident the leading collector is SIGKILLed: the other takes over, the incident carries on
# (updated and resolved under the same id) and every webhook arrives once. Cleans up every
# process it started. Not part of `make test` (the HA drills are).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SONDE_BIN:-.build/release}
INTERVAL=${SONDE_DEMO_INTERVAL:-2s}
work=$(mktemp -d /tmp/sonde-demo-ha.XXXXXX)
chmod 755 "$work"
# shellcheck source=scripts/demo-common.sh
source scripts/demo-common.sh
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
runas=()
[ "$(id -u)" -eq 0 ] && runas=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
webhook_seen() {  # type component
  python3 - "$work/webhooks.jsonl" "$@" <<'PY'
import json, sys
path, kind, component = sys.argv[1:4]
try: lines = open(path).read().splitlines()
except FileNotFoundError: sys.exit(1)
sys.exit(0 if any(json.loads(l)["event"].get("type") == kind and json.loads(l)["event"].get("component") == component for l in lines) else 1)
PY
}
role_of() {  # port → leader/standby
  curl -sf -H "Authorization: Bearer $SONDE_TOKEN" "http://127.0.0.1:$1/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"]["role"])'
}
all_operational() {
  "$BIN/sonde" status --exit-zero --json --collector "$FRONT" | python3 -c '
import json, sys
s = json.load(sys.stdin)
ok = s["components"] and all(c["status"] == "operational" for c in s["components"]) and not s["open_incidents"]
sys.exit(0 if ok and s["agents"]["ok"] == s["agents"]["total"] else 1)'
}
show_status() { "$BIN/sonde" status --exit-zero --collector "$FRONT" | sed 's/^/    /'; }

[ -x "$BIN/sonde-collector" ] || die "no release build in $BIN: run 'make demo-ha' (it builds first)"
[ -n "$pgbin" ] || die "PostgreSQL is not installed: run scripts/install-deps.sh"
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || die "haproxy is not installed: run scripts/install-deps.sh"
export SONDE_SIM_PASSWORD=probe-password

say "Starting a throwaway PostgreSQL in $work/pg"
mkdir -p "$work/pg" && [ "$(id -u)" -ne 0 ] || chown nobody "$work/pg"
(cd "$work/pg" && "${runas[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null) \
  || die "initdb failed"
PGPORT=$(free_port)
(cd "$work/pg" && "${runas[@]}" "$pgbin/postgres" -D "$work/pg/data" -p "$PGPORT" -k "$work/pg" -c listen_addresses=127.0.0.1 \
  >"$work/postgres.log" 2>&1) &
pids+=($!)
psql_super() { (cd "$work/pg" && "${runas[@]}" "$pgbin/psql" -X -q -h "$work/pg" -p "$PGPORT" -U postgres -d postgres -c "$1"); }
wait_for 30 psql_super 'SELECT 1' || die "PostgreSQL did not start: $(tail -5 "$work/postgres.log")"
DBPASS=$(openssl rand -hex 16)
psql_super "CREATE ROLE sonde LOGIN PASSWORD '$DBPASS'" && psql_super "CREATE DATABASE sonde OWNER sonde"
note "PostgreSQL $(basename "$(dirname "$pgbin")") on 127.0.0.1:$PGPORT; the collectors connect as role sonde (not a superuser)"

say "Starting sonde-sim (eu, us, ap) and a webhook receiver"
launch sim '^ap ' "$BIN/sonde-sim" --regions eu,us,ap --batch-pace 300ms
declare -A region_url
while read -r region url; do region_url[$region]=$url; done <"$work/sim.log"
SIM=${region_url[eu]}
launch receiver '^webhook-receiver ' python3 -u scripts/webhook_receiver.py demo-secret "$work/webhooks.jsonl"
RECEIVER=$(awk '{print $2}' "$work/receiver.log")
tail -n +2 -f "$work/receiver.log" &
pids+=($!)

agents=(eu-1 eu-2 us-1 us-2 ap-1 ap-2)
for id in "${agents[@]}"; do "$BIN/sonde-agent" keygen --out "$work/$id.key" >/dev/null; done
SONDE_TOKEN=$(openssl rand -hex 32)
export SONDE_TOKEN
token_sha256=$(printf %s "$SONDE_TOKEN" | sha256sum | cut -d' ' -f1)

say "Starting two collectors on the same database at the same moment (one migrates, one waits on the lock)"
declare -A port_of pid_of
for name in ha-1 ha-2; do
  port_of[$name]=$(free_port)
  cat >"$work/$name.yaml" <<YAML
listen: {host: 127.0.0.1, port: ${port_of[$name]}, plain_http: true}
tokens: [{name: demo, role: read, sha256: $token_sha256}]
database: "postgres://sonde@127.0.0.1:$PGPORT/sonde?sslmode=prefer"
collector_name: $name
YAML
  append_collector_common "$work/$name.yaml"
done
start_collector() {
  PGPASSWORD=$DBPASS "$BIN/sonde-collector" serve --config "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pid_of[$1]=$!
  pids+=($!)
}
start_collector ha-1
start_collector ha-2
for name in ha-1 ha-2; do wait_for 60 grep -q 'Collector listening' "$work/$name.log" || die "$name did not start: $(tail -5 "$work/$name.log")"; done
note "migrations applied: $(cat "$work"/ha-*.log | grep -c 'Applied database migration') (by $(grep -l 'Applied database migration' "$work"/ha-*.log | xargs -n1 basename | sed 's/.log//'))"

FRONTPORT=$(free_port)
cat >"$work/haproxy.cfg" <<CFG
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
frontend sonde
  bind 127.0.0.1:$FRONTPORT
  default_backend collectors
backend collectors
  balance roundrobin
  option httpchk GET /healthz
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2
  server ha-1 127.0.0.1:${port_of[ha-1]} check
  server ha-2 127.0.0.1:${port_of[ha-2]} check
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
FRONT=http://127.0.0.1:$FRONTPORT
wait_for 30 curl -sf "$FRONT/healthz" || die "haproxy did not come up: $(tail -5 "$work/haproxy.log")"
# wait_for re-runs a command: these are functions so that each try asks again (a "$(…)" argument
# would be read once, before the first try). leader_name succeeds whichever collector leads.
leader_name() { for n in ha-1 ha-2; do [ "$(role_of "${port_of[$n]}" 2>/dev/null)" = leader ] && echo "$n"; done; return 0; }
has_leader() { [ -n "$(leader_name)" ]; }
role_is() { [ "$(role_of "${port_of[$1]}" 2>/dev/null)" = "$2" ]; }
wait_for 30 has_leader || die "no collector leads"
LEADER=$(leader_name)
note "haproxy $FRONT → ha-1 :${port_of[ha-1]}, ha-2 :${port_of[ha-2]}; $LEADER leads"

say "Starting 6 agents (2 per region), pushing to haproxy, probes every $INTERVAL"
for id in "${agents[@]}"; do
  region=${id%-*}
  cat >"$work/$id.yaml" <<YAML
agent: {id: $id, region: $region}
collector: {url: $FRONT, key: $work/$id.key, batch_size: 100, flush_interval: 200ms, backoff: {base: 200ms, cap: 2s}}
spool: {path: $work/spool-$id}
probes: [$PWD/probes/sim]
variables: {base_url: ${region_url[$region]}, batch_poll_every: 300ms, finalizing_limit: 3s, latency_degraded_after: 400ms}
scheduling: {interval: $INTERVAL, jitter: 0.1}
YAML
  "$BIN/sonde-agent" run --config "$work/$id.yaml" >"$work/agent-$id.log" 2>&1 &
  pids+=($!)
done
wait_for 120 all_operational || die "components did not become operational"
show_status

say "1. A platform-wide incident: batches stuck in 'finalizing' in every region"
"$BIN/sonde-sim" fault set --sim "$SIM" --type batch_stuck --state finalizing --component batch | sed 's/^/    /'
wait_for 90 webhook_seen incident.opened batch || die "no incident for batch"
show_status

say "2. SIGKILL the leader ($LEADER) during the incident"
kill -KILL "${pid_of[$LEADER]}"
killed_at=$(date +%s.%N)
OTHER=$([ "$LEADER" = ha-1 ] && echo ha-2 || echo ha-1)
wait_for 30 role_is "$OTHER" leader || die "$OTHER did not take over"
note "$OTHER leads after $(python3 -c "import time; print(f'{time.time() - $killed_at:.1f}')") s (haproxy sends agents to it alone)"
grep -h 'Leader engine took over' "$work/$OTHER.log" | tail -1 | sed 's/^/    /'

say "3. It gets worse (batch creation answers 503): the new leader updates the same incident"
"$BIN/sonde-sim" fault set --sim "$SIM" --type error --status 503 --component batch | sed 's/^/    /'
wait_for 90 webhook_seen incident.updated batch || die "the batch incident was not updated"
show_status

say "4. The killed collector comes back as a standby"
start_collector "$LEADER"
wait_for 60 grep -q 'Standing by' "$work/$LEADER.log" || die "$LEADER did not restart"
wait_for 30 role_is "$LEADER" standby || die "$LEADER is not a standby"
note "$LEADER: $(role_of "${port_of[$LEADER]}"), $OTHER: $(role_of "${port_of[$OTHER]}")"

say "5. Recovery"
"$BIN/sonde-sim" fault clear --sim "$SIM" --all >/dev/null
wait_for 120 webhook_seen incident.resolved batch || die "the batch incident did not resolve"
wait_for 90 all_operational || die "components did not return to operational"
show_status

ids=$(python3 - "$work/webhooks.jsonl" <<'PY'
import json, sys
ids = set()
for line in open(sys.argv[1]):
    e = json.loads(line)["event"]
    if e.get("component") == "batch" and e.get("type", "").startswith("incident."):
        inc = e.get("incident")
        ids.add(inc.get("id") if isinstance(inc, dict) else inc)
print(" ".join(sorted(i for i in ids if i)))
PY
)
say "The batch incident across the failover: $ids ($(echo "$ids" | wc -w) id: opened on $LEADER, updated and resolved on $OTHER)"
say "Webhooks received: $(grep -c '^  webhook ' "$work/receiver.log") (signatures: $(grep -c 'signature=valid' "$work/receiver.log") valid; duplicates: $(grep -c DUPLICATE "$work/receiver.log"))"
say "Demo complete in $(( $(date +%s) - start )) s."

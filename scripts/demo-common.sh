# Shared by scripts/demo.sh and scripts/demo-ha.sh (sourced after `work` is set): process
# bookkeeping with clean-up on exit, timestamped output, waiting with a deadline.
pids=()
start=$(date +%s)

cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [ -n "${SONDE_DEMO_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT INT TERM

stamp() { local s=$(( $(date +%s) - start )); printf '[%02d:%02d]' $((s / 60)) $((s % 60)); }
say() { printf '\n%s \033[1m%s\033[0m\n' "$(stamp)" "$*"; }
note() { printf '%s %s\n' "$(stamp)" "$*"; }
die() { printf '\n%s failed: %s\nlogs are in %s\n' "$(basename "$0" .sh)" "$*" "$work" >&2; SONDE_DEMO_KEEP=1; exit 1; }

# Waits (at most $1 seconds) until the command in "$2…" succeeds.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# Starts a process in the background, logs to $work/<name>.log, waits for a line matching $2.
launch() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$work/$name.log" 2>"$work/$name.err" &
  pids+=($!)
  wait_for 60 grep -q "$pattern" "$work/$name.log" "$work/$name.err" || die "$name did not start: $(tail -5 "$work/$name.err")"
}

# The demo collectors' shared config tail (webhook to the demo receiver, fast evaluation, the
# demo's correlation settings, every agent enrolled), appended to the config file $1.
append_collector_common() {
  cat >>"$1" <<YAML
webhooks:
  - {name: demo, url: $RECEIVER, secret: demo-secret, format: json}
webhook_retry: {base: 500ms, cap: 5s, poll: 100ms}
evaluation_interval: 1s
# Shorter windows for a quick demo; resolve_after ends an agent's local-fault episode (eu-1 in
# step 2) after 2 clean evaluations with its new data. Incidents recover by runs (monitor_runs,
# resolve_runs: defaults), not by this.
correlation: {flaky_window: 6, window_runs: 10, resolve_after: 2}
agents:
YAML
  for id in "${agents[@]}"; do
    printf '  - {id: %s, region: %s, public_key: %s}\n' "$id" "${id%-*}" "$(cat "$work/$id.key.pub")" >>"$1"
  done
}

#!/usr/bin/env python3
"""The agent's benchmarks (issue 4, agent half), run by scripts/bench-agent.sh after a release build.

usage: agent_bench.py [--bin .build/release] [--out .bench] [--repeat 3] [--probes 2000]
                      [--trials 10] [--only cost,pipeline,timing,scale,detection]
                      [--pipeline-rates 1,10,100] [--pipeline-seconds 120] [--idle-seconds 60]

Writes .bench/agent-<bench>.md fragments and prints them. Numbers only: nothing here fails on a
slow result. Every process it starts is stopped by pid at the end.
"""
import hashlib
import argparse
import glob
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TICK = os.sysconf("SC_CLK_TCK")
procs = []


# MARK: - processes and /proc

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, args, work, pattern=None, timeout=30, env=None):
    """Starts a process logging to work/name.log; waits for `pattern` in its output."""
    log = open(os.path.join(work, name + ".log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    procs.append(p)
    if pattern:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = open(log.name).read()
            for line in text.splitlines():
                # "word " patterns are the start of a line (a process's stdout), others anywhere.
                if line.startswith(pattern) if pattern.endswith(" ") else pattern in line:
                    return p, line
            if p.poll() is not None:
                raise SystemExit(f"{name} exited: {text[-2000:]}")
            time.sleep(0.05)
        raise SystemExit(f"{name} did not print {pattern!r}: {open(log.name).read()[-2000:]}")
    return p, ""


def stop(p, sig=signal.SIGTERM, grace=10):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_all(work, grace=10):
    """Stops every process started here (newest first) and removes the work folder: each script's
    `finally`."""
    for p in reversed(procs):
        stop(p, grace=grace)
    shutil.rmtree(work, ignore_errors=True)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def process_counters(pid):
    """User and system CPU seconds, minor page faults (/proc/PID/stat) and context switches of
    every thread (/proc/PID/task/*/status): where a process's CPU per probe goes."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    counters = {"utime_s": int(fields[11]) / TICK, "stime_s": int(fields[12]) / TICK, "minflt": int(fields[7]), "switches": 0, "cpu_s": 0.0}
    threads = {}  # CPU seconds by thread name: which of a process's threads spends it
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            for line in open(task + "/status"):
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    counters["switches"] += int(line.split()[1])
            # Nanoseconds on a CPU (the first field of schedstat): /proc/PID/stat counts in 10 ms
            # ticks, which at 1 probe/s is a tenth of the agent's CPU in a 60 s window.
            ns = int(open(task + "/schedstat").read().split()[0])
            counters["cpu_s"] += ns / 1e9
            name = open(task + "/comm").read().strip()
            threads[name] = threads.get(name, 0) + ns / 1e9
        except OSError:
            pass  # a thread that ended meanwhile
    counters["threads"] = threads
    return counters


def status_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


# The read token of the benchmark's collectors (loopback, plain HTTP said explicitly).
COLLECTOR_TOKEN = "agent-bench-read-token"


def get(url, timeout=10):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {COLLECTOR_TOKEN}"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.read()


def wait_for(what, cond, timeout=60, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    load = open("/proc/loadavg").read().split()[:3]
    return f"{cpu}, {os.cpu_count()} cores, {mem} MiB RAM, Linux {platform.release()}, load average at start {' '.join(load)}"


# MARK: - shared fixtures

def nginx(work):
    """nginx from Debian on 127.0.0.1 with a throwaway config, serving a 1 KiB static file."""
    www = os.path.join(work, "www")
    os.makedirs(www, exist_ok=True)
    os.chmod(work, 0o755)  # nginx's worker runs as www-data and must reach the file
    os.chmod(www, 0o755)
    open(os.path.join(www, "small.txt"), "w").write("sonde benchmark target\n" * 44)
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    open(conf, "w").write(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body; proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fcgi; uwsgi_temp_path {work}/nginx-uwsgi; scgi_temp_path {work}/nginx-scgi;
  server {{ listen 127.0.0.1:{port}; root {www}; keepalive_requests 100000; }}
}}
""")
    start("nginx", ["nginx", "-p", work, "-c", conf], work)
    url = f"http://127.0.0.1:{port}/small.txt"
    wait_for("nginx", lambda: get(url))
    return url


def keygen(bin_dir, path):
    subprocess.run([f"{bin_dir}/sonde-agent", "keygen", "--out", path], check=True, stdout=subprocess.DEVNULL)
    return open(path + ".pub").read().strip()


def collector(bin_dir, work, agents, webhook=None, name="collector", correlation=None, limits=None):
    """agents: list of (id, region, public_key). Returns (process, base URL)."""
    conf = os.path.join(work, name + ".yaml")
    digest = hashlib.sha256(COLLECTOR_TOKEN.encode()).hexdigest()
    lines = ["listen: {host: 127.0.0.1, port: 0, plain_http: true}", f"tokens: [{{name: bench, role: read, sha256: {digest}}}]",
             f"database: {work}/{name}.db", "evaluation_interval: 1s"]
    if webhook:
        lines += ["webhooks:", f"  - {{name: bench, url: {webhook}, secret: bench-secret, format: json}}",
                  "webhook_retry: {base: 200ms, cap: 2s, poll: 50ms}"]
    if correlation:
        lines.append(f"correlation: {correlation}")
    if limits:
        lines.append(f"limits: {limits}")
    lines.append("agents:")
    lines += [f"  - {{id: {i}, region: {r}, public_key: {k}}}" for i, r, k in agents]
    open(conf, "w").write("\n".join(lines) + "\n")
    p, line = start(name, [f"{bin_dir}/sonde-collector", "serve", "--config", conf], work, "Collector listening")
    port = line.split("http.port=")[1].split()[0]
    return p, f"http://127.0.0.1:{port}"


def ingested(base):
    for line in get(base + "/metrics").decode().splitlines():
        if line.startswith("sonde_ingest_results_total"):
            return int(float(line.split()[-1]))
    return 0


def probe_file(path, name, url, interval, component="api"):
    open(path, "w").write(f"""name: {name}
component: {component}
interval: {interval}
timeout: 5s
steps:
  - name: get
    request: {{method: GET, url: "{url}"}}
    assert: {{status: 200}}
""")


# MARK: - 1. cost vs blackbox_exporter

def build_curl_floor(work):
    """scripts/bench/curl_floor.c built with the system's cc and libcurl: the same GETs as a probe
    run's transfer (fresh handle, fresh connection) and nothing else, for the floor columns."""
    floor_bin = os.path.join(work, "curl_floor")
    if not os.path.exists(floor_bin):
        subprocess.run(["cc", "-O2", "-o", floor_bin, os.path.join(ROOT, "scripts/bench/curl_floor.c"), "-lcurl"], check=True)
    return floor_bin


def bench_cost(args, work, target):
    n, rate = args.probes, args.rate
    interval_ms = int(1000 * 10 / rate)  # 10 probes, each every interval: `rate` runs/s in all
    rows = []
    # The floor under any libcurl-based agent: the same GETs from a small C program (no scheduler,
    # spool, signing or push), built here with the system's cc and libcurl.
    floor_bin = build_curl_floor(work)
    bb_conf = os.path.join(work, "blackbox.yml")
    open(bb_conf, "w").write("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n")
    for rep in range(args.cost_repeat):
        # blackbox_exporter: N × GET /probe?target=…&module=http_2xx, paced at `rate`, one keep-alive connection.
        port = free_port()
        bb, _ = start(f"blackbox-{rep}", ["prometheus-blackbox-exporter", f"--config.file={bb_conf}",
                                          f"--web.listen-address=127.0.0.1:{port}"], work)
        import http.client
        wait_for("blackbox_exporter", lambda: get(f"http://127.0.0.1:{port}/metrics"))
        conn = http.client.HTTPConnection("127.0.0.1", port)
        path = f"/probe?target={target}&module=http_2xx"

        def probe_once():
            conn.request("GET", path)
            body = conn.getresponse().read()
            if b"probe_success 1" not in body:
                raise SystemExit("blackbox probe failed: " + body.decode()[:500])
        for _ in range(50):  # warm-up
            probe_once()
        cpu0, t0 = cpu_seconds(bb.pid), time.monotonic()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            probe_once()
        bb_cpu = cpu_seconds(bb.pid) - cpu0
        bb_hwm = status_kib(bb.pid, "VmHWM")
        conn.close()
        stop(bb)

        # sonde-agent run: 10 probes (the same GET), each every 10/rate s, results spooled (fsync) and
        # pushed signed to a real collector; CPU of the agent process over N runs.
        d = os.path.join(work, f"cost-{rep}")
        os.makedirs(d + "/probes")
        pub = keygen(args.bin, d + "/agent.key")
        col, base = collector(args.bin, d, [("cost-1", "local", pub)])
        for i in range(10):
            probe_file(d + f"/probes/get{i}.yaml", f"get{i}", target, f"{interval_ms}ms")
        open(d + "/agent.yaml", "w").write(f"""agent: {{id: cost-1, region: local}}
collector: {{url: {base}, key: {d}/agent.key, batch_size: 100, flush_interval: 1s}}
spool: {{path: {d}/spool}}
probes: [{d}/probes]
""")
        agent, _ = start(f"agent-cost-{rep}", [args.agent or f"{args.bin}/sonde-agent", "run", "--config", d + "/agent.yaml"], work, "scheduler started")
        wait_for("warm-up results", lambda: ingested(base) >= 50, timeout=60)
        c0, cpu0 = ingested(base), cpu_seconds(agent.pid)
        wait_for(f"{n} results", lambda: ingested(base) >= c0 + n, timeout=n / rate * 3 + 60, every=0.05)
        c1, cpu1 = ingested(base), cpu_seconds(agent.pid)
        agent_hwm = status_kib(agent.pid, "VmHWM")
        stop(agent)
        stop(col)
        s_cpu = (cpu1 - cpu0) / (c1 - c0)
        b_cpu = bb_cpu / n
        floor = json.loads(subprocess.run([floor_bin, target, str(n), str(rate)], check=True, capture_output=True, text=True).stdout)
        swift_floor = json.loads(subprocess.run([f"{args.bin}/sonde-swift-floor", target, str(n // 4), str(rate)], check=True, capture_output=True, text=True).stdout)
        stack_floor = json.loads(subprocess.run([f"{args.bin}/sonde-memory-floor", target, str(n // 4), str(rate)], check=True, capture_output=True, text=True).stdout)
        rows.append({"bb_cpu_ms": b_cpu * 1000, "sonde_cpu_ms": s_cpu * 1000, "bb_hwm": bb_hwm, "sonde_hwm": agent_hwm,
                     "ratio": s_cpu / b_cpu, "floor_cpu_ms": floor["cpu_per_get_ms"], "floor_hwm": floor["hwm_kib"],
                     "swift_floor_hwm": swift_floor["hwm_kib"], "stack_floor_hwm": stack_floor["hwm_kib"]})
        print(f"cost run {rep + 1}: {rows[-1]}", file=sys.stderr)
    md = [f"### 1. Agent cost vs Prometheus blackbox_exporter ({n} probe runs each, {rate}/s, median of {args.cost_repeat} runs)", "",
          "| run | blackbox_exporter CPU/probe | Sonde agent CPU/probe | ratio Sonde/blackbox | blackbox peak RSS | Sonde peak RSS | floor: libcurl in C, CPU/GET | C floor peak RSS | Swift floor peak RSS | stack floor peak RSS |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        md.append(f"| {i + 1} | {r['bb_cpu_ms']:.3f} ms | {r['sonde_cpu_ms']:.3f} ms | {r['ratio']:.2f} | {r['bb_hwm'] / 1024:.1f} MiB | {r['sonde_hwm'] / 1024:.1f} MiB | "
                  f"{r['floor_cpu_ms']:.3f} ms | {r['floor_hwm'] / 1024:.1f} MiB | {r['swift_floor_hwm'] / 1024:.1f} MiB | {r['stack_floor_hwm'] / 1024:.1f} MiB |")
    m = lambda key: median([r[key] for r in rows])
    md.append(f"| **median** | **{m('bb_cpu_ms'):.3f} ms** | **{m('sonde_cpu_ms'):.3f} ms** | **{m('ratio'):.2f}** | **{m('bb_hwm') / 1024:.1f} MiB** | "
              f"**{m('sonde_hwm') / 1024:.1f} MiB** | **{m('floor_cpu_ms'):.3f} ms** | **{m('floor_hwm') / 1024:.1f} MiB** | **{m('swift_floor_hwm') / 1024:.1f} MiB** | **{m('stack_floor_hwm') / 1024:.1f} MiB** |")
    md += ["", f"Ratio of the medians: {m('sonde_cpu_ms') / m('bb_cpu_ms'):.2f}. The floors do the same GET, fresh connection each time, "
           "from a C program linking only libcurl (scripts/bench/curl_floor.c: what any libcurl-based agent pays before scheduling, "
           "spooling, signing and pushing a result) and from a Swift program with its runtime linked statically and libcurl, "
           "nothing else (Benchmarks/sonde-swift-floor: the memory any Swift agent on libcurl starts from), and the stack floor: "
           "those GETs as a ServiceLifecycle service behind ArgumentParser with swift-log and FoundationEssentials' JSONEncoder, "
           "the libraries Sonde's agent is built on, with none of Sonde's code (Benchmarks/sonde-memory-floor; both 1/4 as many GETs). "
           "Everything is built release with the Swift runtime linked statically, as `make release` builds the agent."]
    return md, rows


# MARK: - 1b. whole pipeline at real rates, side by side

def prometheus_query(base, query):
    url = base + "/api/v1/query?query=" + urllib.request.quote(query)
    data = json.loads(get(url))
    result = data.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else 0.0


def sonde_pipeline(args, d, target, n):
    """Sonde's side of a pipeline window in `d`: a collector and an agent file with N HTTP probes
    every 5 s on `target`, push settings at their defaults. Returns (urls, collector, its base URL);
    the agent is started from d/agent.yaml by the caller."""
    os.makedirs(d + "/probes")
    # Distinct URLs (query strings) so each is its own target/series; nginx serves the same file.
    urls = [f"{target}?p={i}" for i in range(n)]
    pub = keygen(args.bin, d + "/agent.key")
    # One agent carries all N probes; at 100/s that is 500, past the collector's default
    # limits.max_probes_per_agent (200), so the window raises it (stated beside the table).
    col, base = collector(args.bin, d, [("pipe-1", "local", pub)], limits=f"{{max_probes_per_agent: {max(200, n)}}}")
    for i, url in enumerate(urls):
        probe_file(d + f"/probes/get{i}.yaml", f"get{i}", url, "5s")
    # Push settings at their defaults: only the URL and the key.
    open(d + "/agent.yaml", "w").write(f"""agent: {{id: pipe-1, region: local}}
collector: {{url: {base}, key: {d}/agent.key}}
spool: {{path: {d}/spool}}
probes: [{d}/probes]
""")
    return urls, col, base


def pipeline_window(args, work, target, rate, rep):
    """One window: Sonde (agent -> collector, default push settings) and blackbox_exporter scraped by
    Prometheus every 5 s, the same N = 5*rate targets on one nginx, all four running at once."""
    n = rate * 5
    d = os.path.join(work, f"pipeline-{rate}-{rep}")
    urls, col, base = sonde_pipeline(args, d, target, n)
    bb_conf = os.path.join(d, "blackbox.yml")
    open(bb_conf, "w").write("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n")
    bb_port, prom_port = free_port(), free_port()
    prom_conf = os.path.join(d, "prometheus.yml")
    targets = "\n".join(f"          - '{u}'" for u in urls)
    open(prom_conf, "w").write(f"""global: {{scrape_interval: 5s, scrape_timeout: 5s, evaluation_interval: 1m}}
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params: {{module: [http_2xx]}}
    static_configs:
      - targets:
{targets}
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__param_target], target_label: instance}}
      - {{target_label: __address__, replacement: '127.0.0.1:{bb_port}'}}
""")
    bb, _ = start(f"pipe-blackbox-{rate}-{rep}", ["prometheus-blackbox-exporter", f"--config.file={bb_conf}",
                                                  f"--web.listen-address=127.0.0.1:{bb_port}"], work)
    wait_for("blackbox_exporter", lambda: get(f"http://127.0.0.1:{bb_port}/metrics"))
    prom, _ = start(f"pipe-prometheus-{rate}-{rep}", ["prometheus", f"--config.file={prom_conf}", f"--storage.tsdb.path={d}/prom",
                                                      f"--web.listen-address=127.0.0.1:{prom_port}"], work)
    prom_base = f"http://127.0.0.1:{prom_port}"
    agent, _ = start(f"pipe-agent-{rate}-{rep}", [args.agent or f"{args.bin}/sonde-agent", "run", "--config", d + "/agent.yaml"], work, "scheduler started")
    # Warm-up: every probe has run at least once on both sides.
    wait_for("sonde warm-up", lambda: ingested(base) >= n, timeout=60)
    wait_for("prometheus warm-up", lambda: prometheus_query(prom_base, "count(probe_success == 1)") >= n, timeout=60)
    pids = {"agent": agent.pid, "collector": col.pid, "blackbox": bb.pid, "prometheus": prom.pid}
    counters0 = {k: process_counters(v) for k, v in pids.items()}
    c0 = ingested(base)
    # The libcurl floor at the same rate, in the same window: what any agent on libcurl pays for
    # these GETs (fresh connection each) with no scheduler, spool, signing or push.
    floor = subprocess.Popen([build_curl_floor(work), target, str(int(rate * args.pipeline_seconds)), str(rate)],
                             stdout=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    time.sleep(args.pipeline_seconds)
    counters1 = {k: process_counters(v) for k, v in pids.items()}
    elapsed = time.monotonic() - t0
    c1 = ingested(base)
    hwm = {k: status_kib(v, "VmHWM") for k, v in pids.items()}
    window = int(round(elapsed))
    # blackbox probes in the window = samples of probe_success that Prometheus stored in it.
    bb_probes = prometheus_query(prom_base, f"sum(count_over_time(probe_success[{window}s]))")
    bb_ok = prometheus_query(prom_base, f"sum(sum_over_time(probe_success[{window}s]))")
    for p in (agent, prom, bb, col):
        stop(p)
    floor_out, _ = floor.communicate(timeout=60)
    if floor.returncode != 0:
        raise RuntimeError(f"curl_floor failed ({floor.returncode}): {floor_out}")
    sonde_probes = c1 - c0
    row = {"rate": rate, "probes": n, "seconds": elapsed, "sonde_results": sonde_probes, "bb_probes": bb_probes, "bb_ok": bb_ok,
           "floor_ms": json.loads(floor_out)["cpu_per_get_ms"]}
    for k in pids:
        # CPU from every live thread's schedstat (ns); a thread that ended inside the window would
        # be missed, so the tick count of the whole process is kept beside it as a check.
        row[k + "_cpu_s"] = counters1[k]["cpu_s"] - counters0[k]["cpu_s"]
        row[k + "_ticks_cpu_s"] = sum(counters1[k][t] - counters0[k][t] for t in ("utime_s", "stime_s"))
        row[k + "_hwm"] = hwm[k]
        runs_of_k = sonde_probes if k in ("agent", "collector") else bb_probes
        before, after = counters0[k].pop("threads"), counters1[k].pop("threads")
        row[k + "_threads_ms_per_probe"] = {name: round((after[name] - before.get(name, 0)) * 1000 / max(runs_of_k, 1), 3)
                                            for name in sorted(after, key=lambda n: before.get(n, 0) - after[n])}
        for name in counters0[k]:
            scale = 1000 if name.endswith("_s") else 1  # seconds -> ms per probe
            row[f"{k}_{name.removesuffix('_s')}_per_probe"] = (counters1[k][name] - counters0[k][name]) * scale / max(runs_of_k, 1)
    row["agent_ms"] = row["agent_cpu_s"] * 1000 / max(sonde_probes, 1)
    row["collector_ms"] = row["collector_cpu_s"] * 1000 / max(sonde_probes, 1)
    row["bb_ms"] = row["blackbox_cpu_s"] * 1000 / max(bb_probes, 1)
    row["prom_ms"] = row["prometheus_cpu_s"] * 1000 / max(bb_probes, 1)
    print(f"pipeline {rate}/s run {rep + 1}: {row}", file=sys.stderr)
    return row


def idle_agent(args, work, target, rep):
    """An agent whose probes are not due: 5 probes every 1 h, measured after their first runs."""
    d = os.path.join(work, f"idle-{rep}")
    os.makedirs(d + "/probes")
    pub = keygen(args.bin, d + "/agent.key")
    col, base = collector(args.bin, d, [("idle-1", "local", pub)])
    for i in range(5):
        probe_file(d + f"/probes/get{i}.yaml", f"get{i}", target, "1h")
    open(d + "/agent.yaml", "w").write(f"""agent: {{id: idle-1, region: local}}
collector: {{url: {base}, key: {d}/agent.key}}
spool: {{path: {d}/spool}}
probes: [{d}/probes]
""")
    agent, _ = start(f"idle-agent-{rep}", [args.agent or f"{args.bin}/sonde-agent", "run", "--config", d + "/agent.yaml"], work, "scheduler started")
    # Every probe's first run falls somewhere in its first hour (its offset): start counting once
    # the results so far are delivered; a run due meanwhile would show as a result.
    # CPU from schedstat (nanoseconds): /proc/PID/stat counts 10 ms ticks, and an idle agent
    # spends a few ms a minute (it read 0.000 % that way). The collector beside it, with one
    # enrolled agent and no pushes, gives its idle floor: at 1 probe/s that floor is part of each
    # probe's collector CPU.
    time.sleep(5)
    c0, a0, k0, t0 = ingested(base), process_counters(agent.pid), process_counters(col.pid), time.monotonic()
    time.sleep(args.idle_seconds)
    a1, k1, elapsed, c1 = process_counters(agent.pid), process_counters(col.pid), time.monotonic() - t0, ingested(base)
    stop(agent)
    stop(col)
    cpu, col_cpu = a1["cpu_s"] - a0["cpu_s"], k1["cpu_s"] - k0["cpu_s"]
    return {"seconds": elapsed, "cpu_s": cpu, "core_percent": 100 * cpu / elapsed, "runs_meanwhile": c1 - c0,
            "switches_per_s": (a1["switches"] - a0["switches"]) / elapsed,
            "collector_ms_per_s": 1000 * col_cpu / elapsed, "collector_switches_per_s": (k1["switches"] - k0["switches"]) / elapsed}


def bench_pipeline(args, work, target):
    rates = [int(r) for r in args.pipeline_rates.split(",")]
    runs = {rate: [] for rate in rates}
    for rep in range(args.repeat):
        for rate in rates:
            runs[rate].append(pipeline_window(args, work, target, rate, rep))
    idles = [idle_agent(args, work, target, rep) for rep in range(args.repeat)]
    return render_pipeline(args, rates, runs, idles)


def render_pipeline(args, rates, runs, idles):
    md = [f"### 1b. Whole pipeline at real rates vs blackbox_exporter + Prometheus (N HTTP probes every 5 s, {args.pipeline_seconds} s window, all four processes side by side on one nginx; median of {args.repeat} runs)", "",
          "Sonde: `sonde-agent run` with N probe files (one GET each, `interval: 5s`), pushing to a real `sonde-collector serve` "
          "with the push settings at their defaults (`collector:` has only `url` and `key`: batch_size 100, flush_interval 1s; "
          "pushes over one kept-alive connection), the collector on plain HTTP on loopback (`listen: {plain_http: true}`, "
          "non-default; `evaluation_interval: 1s`, the default; `limits: {max_probes_per_agent: N}` when N is over the default "
          "200, non-default: the one agent carries all N probes). "
          "Prometheus (Debian `prometheus`) scrapes `blackbox_exporter` (`http_2xx`) for the same N URLs every 5 s "
          "(`scrape_interval: 5s`, the only non-default). CPU = nanoseconds on a CPU of every thread (/proc/PID/task/*/schedstat) over the window, divided by the "
          "probe runs in it (Sonde: results the collector ingested; blackbox: `probe_success` samples Prometheus stored). "
          "Peak RSS = VmHWM at the end of the window. The libcurl floor runs in the same window at the same rate: "
          "scripts/bench/curl_floor.c, a C program that does only the GETs (fresh easy handle and connection each, "
          "as a probe run's transfer), CPU from getrusage; its ratio to blackbox_exporter is the lowest any agent on "
          "libcurl could reach here.", "",
          "| probes/s (N) | agent CPU/probe | blackbox CPU/probe | agent/blackbox (≤ 0.33) | libcurl floor CPU/GET | floor/blackbox | collector CPU/probe | Prometheus CPU/probe | (agent+collector)/(blackbox+Prometheus) (≤ 0.5) | agent peak RSS | blackbox peak RSS | agent/blackbox RSS (≤ 1.25) | collector peak RSS | Prometheus peak RSS | command |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for rate in rates:
        rs = runs[rate]
        m = lambda key: median([r[key] for r in rs])
        a, b, c, p = m("agent_ms"), m("bb_ms"), m("collector_ms"), m("prom_ms")
        ratio = median([r["agent_ms"] / r["bb_ms"] for r in rs])
        pair = median([(r["agent_ms"] + r["collector_ms"]) / (r["bb_ms"] + r["prom_ms"]) for r in rs])
        rss = median([r["agent_hwm"] / r["blackbox_hwm"] for r in rs])
        floor_ratio = median([r["floor_ms"] / r["bb_ms"] for r in rs])
        summary[rate] = {"ratio": ratio, "pair": pair, "rss": rss, "floor_ratio": floor_ratio}
        cmd = f"`SONDE_BENCH_ONLY=pipeline SONDE_BENCH_ARGS=\"--pipeline-rates {rate}\" scripts/bench-agent.sh`"
        md.append(f"| {rate} ({rate * 5}) | {a:.3f} ms | {b:.3f} ms | {ratio:.2f} | {m('floor_ms'):.3f} ms | {floor_ratio:.2f} | {c:.3f} ms | {p:.3f} ms | {pair:.2f} | "
                  f"{m('agent_hwm') / 1024:.1f} MiB | {m('blackbox_hwm') / 1024:.1f} MiB | {rss:.2f} | {m('collector_hwm') / 1024:.1f} MiB | {m('prometheus_hwm') / 1024:.1f} MiB | {cmd} |")
    idle = median([i["core_percent"] for i in idles])
    idle_collector = median([i["collector_ms_per_s"] for i in idles])
    md += ["", f"Idle agent (5 probes every 1 h, none due, {args.idle_seconds} s after start-up; median of {len(idles)}): "
           f"**{idle:.4f} % of a core** (target < 0.1 %; {median([i['switches_per_s'] for i in idles]):.1f} context switches a second; "
           f"runs meanwhile: {', '.join(str(i['runs_meanwhile']) for i in idles)}). "
           f"Its collector meanwhile (one enrolled agent, no pushes): {idle_collector:.3f} ms of CPU a second "
           f"({median([i['collector_switches_per_s'] for i in idles]):.1f} switches a second): at 1 probe/s that idle floor "
           f"is {idle_collector:.3f} ms of the collector's CPU per probe.", "",
           "Per-run figures (agent / blackbox ms per probe, Sonde results / blackbox probes in the window): " +
           "; ".join(f"{rate}/s: " + ", ".join(f"{r['agent_ms']:.3f}/{r['bb_ms']:.3f} ({r['sonde_results']}/{int(r['bb_probes'])})" for r in runs[rate]) for rate in rates) + ".", "",
           "Where each process's CPU per probe goes (medians; user / system ms, minor page faults, context switches of all "
           "threads, per probe): " + "; ".join(
               f"{rate}/s: " + ", ".join(
                   f"{k} {median([r[k + '_utime_per_probe'] for r in runs[rate]]):.3f} / {median([r[k + '_stime_per_probe'] for r in runs[rate]]):.3f} ms, "
                   f"{median([r[k + '_minflt_per_probe'] for r in runs[rate]]):.1f} faults, {median([r[k + '_switches_per_probe'] for r in runs[rate]]):.1f} switches"
                   for k in ("agent", "collector", "blackbox", "prometheus"))
               for rate in rates) + "."]
    return md, {"runs": runs, "idle": idles, "summary": summary}


# MARK: - 2. timing accuracy

def bench_timing(args, work):
    _, line = start("delay-server", [sys.executable, "-u", os.path.join(HERE, "delay_server.py")], work, "delay-server ")
    base = line.split()[1]
    reps = []
    for rep in range(args.repeat):
        out = subprocess.run([f"{args.bin}/sonde-agent-bench", "timing", "--base", base, "--runs", str(args.timing_runs)],
                             check=True, capture_output=True, text=True).stdout
        reps.append([json.loads(l) for l in out.splitlines() if l.startswith("{")])
        print(f"timing run {rep + 1}: done", file=sys.stderr)
    md = [f"### 2. Timing accuracy ({args.timing_runs} GETs per delay and client, alternating Sonde and curl; median of {args.repeat} runs)", "",
          "| injected delay | Sonde ttfb | curl ttfb | Sonde total | curl total | \\|Sonde−curl\\| ttfb median / p99 | \\|Sonde−curl\\| total median / p99 | \\|Sonde ttfb−delay\\| median / p99 |",
          "|---|---|---|---|---|---|---|---|"]
    rows = []
    for i, first in enumerate(reps[0]):
        m = lambda k: median([r[i][k] for r in reps])
        rows.append({k: m(k) for k in first if isinstance(first[k], (int, float))})
        md.append(f"| {first['delay_ms']} ms | {m('sonde_ttfb_median'):.2f} ms | {m('curl_ttfb_median'):.2f} ms | {m('sonde_total_median'):.2f} ms | "
                  f"{m('curl_total_median'):.2f} ms | {m('abs_err_vs_curl_ttfb_median'):.2f} / {m('abs_err_vs_curl_ttfb_p99'):.2f} ms | "
                  f"{m('abs_err_vs_curl_total_median'):.2f} / {m('abs_err_vs_curl_total_p99'):.2f} ms | {m('abs_err_vs_delay_ttfb_median'):.2f} / {m('abs_err_vs_delay_ttfb_p99'):.2f} ms |")
    return md, rows


# MARK: - 3. scale

def bench_scale(args, work, target):
    reps = []
    for rep in range(args.repeat):
        out = subprocess.run([f"{args.bin}/sonde-agent-bench", "scale", "--target", target, "--steps", args.scale_steps,
                              "--seconds", str(args.scale_seconds)], check=True, capture_output=True, text=True).stdout
        reps.append([json.loads(l) for l in out.splitlines() if l.startswith("{")])
        print(f"scale run {rep + 1}: {[(r['probes'], round(r['on_time_ratio'], 3)) for r in reps[-1]]}", file=sys.stderr)
    md = [f"### 3. Agent scale (probes each GET the nginx file every 1 s; {args.scale_seconds} s per step; on schedule = started ≤ 100 ms after its slot; median of {args.repeat} runs)", "",
          "| probes (offered runs/s) | runs/s achieved | on schedule | start lateness p50 / p99 | CPU per run | RSS |", "|---|---|---|---|---|---|"]
    rows = []
    for i, first in enumerate(reps[0]):
        m = lambda k: median([r[i][k] for r in reps])
        rows.append({"probes": first["probes"], "on_time": m("on_time_ratio"), "rate": m("achieved_rate")})
        md.append(f"| {first['probes']} ({first['offered_rate']:.0f}) | {m('achieved_rate'):.1f} | {m('on_time_ratio') * 100:.1f} % | "
                  f"{m('lateness_p50_ms'):.1f} / {m('lateness_p99_ms'):.1f} ms | {m('cpu_per_run_ms'):.3f} ms | {m('rss_kib') / 1024:.1f} MiB |")
    sustained = max((r["probes"] for r in rows if r["on_time"] >= 0.95), default=0)
    md += ["", f"Highest step with ≥ 95 % of runs on schedule: **{sustained} probe runs/s**."]

    # RSS of a real `sonde-agent run` with 1,000 probes configured (every 30 s: ~33 runs/s).
    d = os.path.join(work, "rss")
    os.makedirs(d + "/probes")
    pub = keygen(args.bin, d + "/agent.key")
    col, base = collector(args.bin, d, [("rss-1", "local", pub)], name="collector-rss")
    for i in range(1000):
        probe_file(f"{d}/probes/p{i}.yaml", f"p{i}", target, "30s")
    open(d + "/agent.yaml", "w").write(f"agent: {{id: rss-1, region: local}}\ncollector: {{url: {base}, key: {d}/agent.key}}\n"
                                       f"spool: {{path: {d}/spool}}\nprobes: [{d}/probes]\n")
    agent, _ = start("agent-rss", [f"{args.bin}/sonde-agent", "run", "--config", d + "/agent.yaml"], work, "scheduler started")
    wait_for("a full interval of runs", lambda: ingested(base) >= 1000, timeout=240, every=0.5)
    rss, hwm = status_kib(agent.pid, "VmRSS"), status_kib(agent.pid, "VmHWM")
    stop(agent)
    stop(col)
    md += ["", f"`sonde-agent run` with **1,000 probes** configured (each every 30 s), after its first 1,000 runs were delivered: "
               f"RSS **{rss / 1024:.1f} MiB** (peak {hwm / 1024:.1f} MiB)."]
    return md, {"steps": rows, "sustained": sustained, "rss_1000_kib": rss, "hwm_1000_kib": hwm}


# MARK: - 4. detection latency

class Receiver:
    """Webhook receiver that notes when each event arrived."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time()
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {}
                with outer.lock:
                    outer.events.append((now, event))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def find(self, kind, after, pred=lambda e: True):
        with self.lock:
            for t, e in self.events:
                if t >= after and e.get("type") == kind and pred(e):
                    return t, e
        return None

    def count(self, kind, after, before=None):
        with self.lock:
            return sum(1 for t, e in self.events if t >= after and (before is None or t < before) and e.get("type") == kind)


def sim_fault(sim, body=None, delete=False):
    req = urllib.request.Request(sim + "/_sim/faults", method="DELETE" if delete else "POST",
                                 data=None if delete else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def bench_detection(args, work):
    rows = []
    receiver = Receiver()
    env = dict(os.environ, SONDE_SIM_PASSWORD="probe-password")
    for interval in args.intervals:
        d = os.path.join(work, f"detect-{interval}s")
        os.makedirs(d + "/probes")
        sim, _ = start(f"sim-{interval}", [f"{args.bin}/sonde-sim", "--regions", "eu,us"], d, "us ", env=env)
        regions = dict(l.split()[:2] for l in open(d + f"/sim-{interval}.log") if l.split() and l.split()[0] in ("eu", "us"))
        agents = [("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us"), ("us-2", "us")]
        keys = {a: keygen(args.bin, f"{d}/{a}.key") for a, _ in agents}
        col, base = collector(args.bin, d, [(a, r, keys[a]) for a, r in agents], webhook=receiver.url, name="collector")
        for src in ("latency.yaml", "reach.yaml"):
            text = open(os.path.join(ROOT, "probes/sim", src)).read()
            text = "\n".join(f"interval: {interval}s" if l.startswith("interval:") else l for l in text.splitlines()) + "\n"
            open(f"{d}/probes/{src}", "w").write(text)
        relays = {}
        agent_procs = []
        for a, r in agents:
            relay, line = start(f"relay-{a}", [f"{args.bin}/sonde-sim", "relay", "--listen", "127.0.0.1:0", "--to", regions[r].split("//")[1]], d, "relay ")
            relays[a] = relay
            open(f"{d}/{a}.yaml", "w").write(f"""agent: {{id: {a}, region: {r}}}
collector: {{url: {base}, key: {d}/{a}.key, flush_interval: 100ms, backoff: {{base: 200ms, cap: 2s}}}}
spool: {{path: {d}/spool-{a}}}
probes: [{d}/probes]
variables: {{base_url: {line.split()[1]}, latency_degraded_after: 2s}}
""")
            p, _ = start(f"agent-{a}", [f"{args.bin}/sonde-agent", "run", "--config", f"{d}/{a}.yaml"], d, "scheduler started", env=env)
            agent_procs.append(p)
        sim_url = regions["eu"]

        def operational():
            s = json.loads(get(base + "/v1/status"))
            comps = {c["component"]: c["status"] for c in s["components"]}
            return comps.get("api") == "operational" and not s["open_incidents"]
        wait_for("api operational", operational, timeout=interval * 20 + 60, every=0.5)

        def explain_timeout(t_inject):
            # Every webhook so far (time relative to the injection) and the collector's status.
            for t, e in receiver.events:
                print(f"{t - t_inject:+.2f} {json.dumps(e)[:400]}", file=sys.stderr)
            print(get(base + "/v1/status").decode()[:3000], file=sys.stderr)

        latencies = []
        for trial in range(args.trials):
            time.sleep(random.uniform(0, interval))  # a random phase against the probe schedule
            t_inject = time.time()
            sim_fault(sim_url, {"type": "error", "status": 503, "components": ["api"]})
            try:
                wait_for("incident.opened", lambda: receiver.find("incident.opened", t_inject, lambda e: e.get("component") == "api"),
                         timeout=interval * 10 + 60, every=0.02)
            except SystemExit:
                explain_timeout(t_inject)
                raise
            t_open, _ = receiver.find("incident.opened", t_inject, lambda e: e.get("component") == "api")
            latencies.append(t_open - t_inject)
            print(f"detection {interval}s trial {trial + 1}: {latencies[-1]:.2f} s", file=sys.stderr)
            sim_fault(sim_url, delete=True)
            t_clear = time.time()
            try:
                wait_for("incident.resolved", lambda: receiver.find("incident.resolved", t_clear, lambda e: e.get("component") == "api"),
                         timeout=interval * 20 + 60, every=0.1)
            except SystemExit:
                explain_timeout(t_inject)
                raise
            wait_for("api operational", operational, timeout=interval * 20 + 60, every=0.2)

        # A local fault: eu-1's network cut (its relay stops forwarding), twice per interval.
        local = []
        for _ in range(args.local_trials):
            t_cut = time.time()
            relays["eu-1"].send_signal(signal.SIGUSR1)
            wait_for("agent.local_fault", lambda: receiver.find("agent.local_fault", t_cut, lambda e: "eu-1" in json.dumps(e)),
                     timeout=interval * 10 + 60, every=0.02)
            t_local, _ = receiver.find("agent.local_fault", t_cut, lambda e: "eu-1" in json.dumps(e))
            # Keep it cut a while longer: no platform incident may open from it.
            time.sleep(max(3 * interval, 5))
            opened = receiver.count("incident.opened", t_cut)
            with receiver.lock:
                for t, e in receiver.events:
                    if t >= t_cut and e.get("type") == "incident.opened":
                        print(f"  incident opened during the local fault: {json.dumps(e)[:600]}", file=sys.stderr)
            relays["eu-1"].send_signal(signal.SIGUSR2)
            local.append((t_local - t_cut, opened))
            print(f"local fault {interval}s: agent.local_fault after {t_local - t_cut:.2f} s, incidents opened {opened}", file=sys.stderr)
            # The episode ends after 3 clean evaluations: only then is a new cut a new local fault.
            def eu1_ok():
                views = json.loads(get(base + "/v1/agents"))["agents"]
                return any(v["id"] == "eu-1" and v.get("state") == "ok" for v in views)
            wait_for("eu-1 healthy again", lambda: eu1_ok() and operational(), timeout=120, every=0.5)
            time.sleep(2 * interval)
        for p in agent_procs:
            stop(p)
        for p in relays.values():
            stop(p)
        stop(col)
        stop(sim)
        rows.append({"interval": interval, "trials": len(latencies), "median": median(latencies), "max": max(latencies),
                     "target": 2 * interval + 1, "local": local})
    md = [f"### 4. Detection latency end to end (fault set in sonde-sim → `incident.opened` at a webhook receiver)", "",
          "2 regions × 2 agents, each behind its own relay; probes `sim-latency` (component api) and the control probe `sim-reach`;"
          " fault: HTTP 503 on `api` in every region, injected at a random phase; collector defaults (`confirm_failures: 2`, `open_after: 2`,"
          " `evaluation_interval: 1s`).", "",
          "| probe interval | trials | median | max | target (2 intervals + 1 s) | local fault (eu-1 relay cut): `agent.local_fault` after | incidents opened by the local fault |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        lf = ", ".join(f"{t:.1f} s" for t, _ in r["local"]) or "—"
        md.append(f"| {r['interval']} s | {r['trials']} | {r['median']:.2f} s | {r['max']:.2f} s | {r['target']:.0f} s | {lf} | {sum(o for _, o in r['local'])} |")
    return md, rows


# MARK: - main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release"))
    ap.add_argument("--out", default=os.path.join(ROOT, ".bench"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cost-repeat", type=int, default=5, help="runs of the cost benchmark (its CPU figures vary most)")
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--timing-runs", type=int, default=30)
    ap.add_argument("--scale-steps", default="50,200,800,1600,3200,6400,9600,12800")
    ap.add_argument("--scale-seconds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--local-trials", type=int, default=3)
    ap.add_argument("--intervals", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 5])
    ap.add_argument("--pipeline-rates", default="1,10,100", help="probe runs per second (N = 5 x rate probes every 5 s)")
    ap.add_argument("--pipeline-seconds", type=int, default=120)
    ap.add_argument("--idle-seconds", type=int, default=60)
    ap.add_argument("--only", default="cost,pipeline,timing,scale,detection")
    ap.add_argument("--agent", help="the sonde-agent to measure in the cost benchmark (default: --bin's)")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    # Fail before the first window, not in it: scripts/bench-agent.sh installs these.
    needed = {"cost": ["nginx", "prometheus-blackbox-exporter", "cc"], "pipeline": ["nginx", "prometheus-blackbox-exporter", "prometheus", "cc"],
              "scale": ["nginx"]}
    missing = sorted({tool for name in args.only.split(",") for tool in needed.get(name, []) if not shutil.which(tool)})
    if missing:
        raise SystemExit(f"agent_bench.py: missing {', '.join(missing)} (on PATH; nginx is in /usr/sbin). "
                         "Run scripts/bench-agent.sh, which installs them, or apt-get install the Debian packages "
                         "nginx-light, prometheus-blackbox-exporter, prometheus, gcc.")
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="sonde-agent-bench-")
    header = f"Machine: {machine()}. Release build. Run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    try:
        target = nginx(work)
        for name in args.only.split(","):
            if name == "cost":
                md, data = bench_cost(args, work, target)
            elif name == "pipeline":
                md, data = bench_pipeline(args, work, target)
            elif name == "timing":
                md, data = bench_timing(args, work)
            elif name == "scale":
                md, data = bench_scale(args, work, target)
            elif name == "detection":
                md, data = bench_detection(args, work)
            else:
                raise SystemExit(f"unknown benchmark {name}")
            text = "\n".join(md + ["", header, ""])
            open(os.path.join(args.out, f"agent-{name}.md"), "w").write(text)
            open(os.path.join(args.out, f"agent-{name}.json"), "w").write(json.dumps(data, indent=1))
            print(text)
    finally:
        stop_all(work, grace=5)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Profiles the agent (or, with --collector, the collector) at a pipeline rate: nginx, a collector
and one agent started as agent_bench.py's pipeline window starts them (N = 5 × RATE HTTP probes
every 5 s, push settings at their defaults), no blackbox_exporter or Prometheus. After warm-up
plus 5 s, `perf record -g` samples that process for SECONDS; prints its CPU per result over that
time (perf's call-graph sampling adds to it: read the shares, not the total).

usage: profile_agent.py RATE SECONDS PERF_DATA [--bin .build/release] [--agent PATH] [--collector]
then:  perf report -i PERF_DATA --no-children --sort comm|dso|sym
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("rate", type=int)
    p.add_argument("seconds", type=int)
    p.add_argument("perf_data")
    p.add_argument("--bin", default=".build/release")
    p.add_argument("--agent")
    p.add_argument("--collector", action="store_true", help="sample the collector instead of the agent")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="sonde-profile-")
    try:
        target = ab.nginx(work)
        n = args.rate * 5
        _, col, base = ab.sonde_pipeline(args, work, target, n)
        agent, _ = ab.start("agent", [args.agent or f"{args.bin}/sonde-agent", "run", "--config", work + "/agent.yaml"], work, "scheduler started")
        ab.wait_for("warm-up", lambda: ab.ingested(base) >= n, timeout=60)
        time.sleep(5)
        sampled = col if args.collector else agent
        c0, i0 = ab.process_counters(sampled.pid), ab.ingested(base)
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g", "-o", args.perf_data, "-p", str(sampled.pid),
                        "--", "sleep", str(args.seconds)], check=True)
        c1, i1 = ab.process_counters(sampled.pid), ab.ingested(base)
        results = max(i1 - i0, 1)
        t0, t1 = c0.pop("threads"), c1.pop("threads")
        per = {k: round((c1[k] - c0[k]) * (1000 if k.endswith("_s") else 1) / results, 3) for k in c0}
        per["threads_ms"] = {name: round((t1[name] - t0.get(name, 0)) * 1000 / results, 3) for name in t1}
        print(f"{results} results; per result (ms for CPU, under perf): {per}")
    finally:
        ab.stop_all(work)


if __name__ == "__main__":
    main()

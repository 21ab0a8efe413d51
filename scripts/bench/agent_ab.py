#!/usr/bin/env python3
"""Two (or more) sonde-agent binaries side by side in one window, for an A/B of CPU per probe.

    PATH=$PATH:/usr/sbin python3 scripts/bench/agent_ab.py --bins OLD,NEW [--rate 10] [--seconds 40] [--repeat 6]

Each run starts one nginx (shared), and per binary a collector and an agent with the pipeline
benchmark's set-up (5 x rate probes, one GET each every 5 s, push settings at their defaults);
the agents are started in swapped order every other run (the second one started read a few
percent higher in an A/A test). CPU per probe = nanoseconds on a CPU of all the agent's threads
over the window / results its collector ingested. Prints each run and the medians.
A binary may be a wrapper script that `exec`s an agent (for example to set GLIBC_TUNABLES).
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bins", required=True, help="comma-separated sonde-agent binaries")
    ap.add_argument("--collector-bin", default=os.path.join(ab.ROOT, ".build/release"), help="folder with sonde-collector and sonde-agent (keygen)")
    ap.add_argument("--rate", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=6)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sonde-ab-")
    try:
        compare(args, work)
    finally:
        ab.stop_all(work, grace=5)


def compare(args, work):
    bins = args.bins.split(",")
    target = ab.nginx(work)
    runs = [[] for _ in bins]  # by position in --bins (the same binary may be given twice: an A/A test)
    peaks = [[] for _ in bins]  # peak RSS (VmHWM, MiB) at the end of each window
    setup = argparse.Namespace(bin=args.collector_bin, agent=None)
    for rep in range(args.repeat):
        order = list(range(len(bins))) if rep % 2 == 0 else list(reversed(range(len(bins))))
        started = []
        for i, which in enumerate(order):
            binary = bins[which]
            d = f"{work}/run{rep}-{i}"
            _, col, base = ab.sonde_pipeline(setup, d, target, args.rate * 5)
            agent, _ = ab.start(f"agent-{rep}-{i}", [binary, "run", "--config", d + "/agent.yaml"], work, "scheduler started")
            started.append((which, agent, col, base))
        for _, _, _, base in started:
            ab.wait_for("warm-up", lambda: ab.ingested(base) >= args.rate * 5, timeout=60)
        before = [(ab.process_counters(a.pid)["cpu_s"], ab.ingested(base)) for _, a, _, base in started]
        time.sleep(args.seconds)
        after = [(ab.process_counters(a.pid)["cpu_s"], ab.ingested(base)) for _, a, _, base in started]
        for (which, agent, col, _), b0, b1 in zip(started, before, after):
            runs[which].append((b1[0] - b0[0]) * 1000 / max(1, b1[1] - b0[1]))
            peaks[which].append(ab.status_kib(agent.pid, "VmHWM") / 1024)
            ab.stop(agent)
            ab.stop(col)
        print(f"run {rep + 1}: " + ", ".join(f"{b}: {runs[i][-1]:.3f} ms" for i, b in enumerate(bins)), flush=True)
    for i, binary in enumerate(bins):
        print(f"{binary}: median {ab.median(runs[i]):.3f} ms per probe; runs {[round(x, 3) for x in runs[i]]}; "
              f"peak RSS median {ab.median(peaks[i]):.1f} MiB, runs {[round(x, 1) for x in peaks[i]]}")


if __name__ == "__main__":
    main()

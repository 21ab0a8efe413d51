#!/usr/bin/env python3
"""The libcurl floor two ways, side by side on one nginx: a new easy handle per GET (as the
floor in agent_bench.py, and as the agent does) and one handle reset and reused (tried in the
agent in the sixteenth session and left: BENCHMARKS-agent.md). Alternates the two, order swapped
each run, and prints each's CPU per GET (ms) per run and the median of the per-run ratios
reuse/new.

usage: curl_floor_reuse.py GETS RATE RUNS     e.g. 300 20 4, or 30 1 4 (one GET a second)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402


def main():
    gets, rate, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    work = tempfile.mkdtemp(prefix="sonde-floor-")
    floor = ab.build_curl_floor(work)
    url = ab.nginx(work)
    per = {"new": [], "reuse": []}
    try:
        for i in range(runs):
            for mode in (["new", "reuse"] if i % 2 == 0 else ["reuse", "new"]):
                args = [floor, url, gets, rate] + (["reuse"] if mode == "reuse" else [])
                out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
                per[mode].append(json.loads(out)["cpu_per_get_ms"])
    finally:
        ab.stop_all(work)
    for mode, values in per.items():
        print(f"{mode}: median {statistics.median(values):.4f} ms per GET; runs {values}")
    ratios = [r / n for r, n in zip(per["reuse"], per["new"])]
    print(f"reuse/new: median of per-run ratios {statistics.median(ratios):.3f} ({', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()

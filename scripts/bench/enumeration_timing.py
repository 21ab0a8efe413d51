#!/usr/bin/env python3
"""Can a client without a key tell enrolled agent ids from unknown ones by how the collector
refuses a push? (red team, third pass, item a). Per run: a release collector with one enrolled
agent; N pushes alternating between the enrolled id and an unknown id, each with the same
well-formed but wrong signature (a real Ed25519 signature of other bytes, by another key) and the
same ~2 KB body; the answer times and the answers' bytes of each.

usage: enumeration_timing.py [--bin .build/release] [--pushes 2000] [--runs 3]
Prints a markdown table; exits non-zero if the answers' bytes differ between the two ids.
"""
import argparse
import base64
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402

WARM_UP = 200


def one_run(args):
    work = tempfile.mkdtemp(prefix="sonde-enum-")
    col = None
    try:
        pub = ab.keygen(args.bin, work + "/agent.key")
        col, base = ab.collector(args.bin, work, [("eu-1", "eu", pub)])
        host, port = base.split("//")[1].split(":")
        body = ('{"agent":"X","batch_id":"b","sent_at":"2026-01-01T00:00:00Z","results":[' + ",".join(
            ['{"id":"r%d","probe":"p","component":"c","agent":"X","region":"eu","started_at":"2026-01-01T00:00:00Z",'
             '"duration_ms":1,"outcome":"ok","steps":[]}' % i for i in range(12)]) + "]}").encode()
        # A real signature: a random 64 bytes is mostly refused before the curve arithmetic (its S
        # is out of range), which would hide the full verification an attacker can make it pay.
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", work + "/other.pem"], check=True)
        open(work + "/other.txt", "w").write("other bytes")
        signature = base64.b64encode(subprocess.run(
            ["openssl", "pkeyutl", "-sign", "-inkey", work + "/other.pem", "-rawin", "-in", work + "/other.txt"],
            check=True, capture_output=True).stdout).decode()
        times = {"enrolled": [], "unknown": []}
        answers = {"enrolled": set(), "unknown": set()}
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for i in range(args.pushes * 2):
            who = "enrolled" if i % 2 == 0 else "unknown"
            headers = {"Content-Type": "application/json", "Sonde-Agent": "eu-1" if who == "enrolled" else "eu-9",
                       "Sonde-Agent-Signature": signature}
            start = time.perf_counter_ns()
            try:
                conn.request("POST", "/v1/results", body=body, headers=headers)
                response = conn.getresponse()
                text = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                continue
            elapsed = (time.perf_counter_ns() - start) / 1000
            if i >= WARM_UP:
                times[who].append(elapsed)
            answers[who].add((response.status, response.getheader("Connection", ""), text))
        same = answers["enrolled"] == answers["unknown"] and len(answers["enrolled"]) == 1
        return times, same, answers
    finally:
        if col:
            ab.stop(col)
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=".build/release")
    p.add_argument("--pushes", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    print(f"{args.pushes} pushes per id per run ({WARM_UP // 2} of them warm-up), alternating, one keep-alive connection; "
          "answer time as the client sees it, in µs.")
    print()
    print("| run | enrolled id: median (p10–p90) | unknown id: median (p10–p90) | unknown / enrolled (median) | answers byte for byte the same |")
    print("|---|---|---|---|---|")
    ratios, all_same = [], True
    for run in range(1, args.runs + 1):
        times, same, answers = one_run(args)
        row = []
        for who in ("enrolled", "unknown"):
            xs = sorted(times[who])
            row.append(f"{statistics.median(xs):.0f} ({xs[len(xs) // 10]:.0f}–{xs[len(xs) * 9 // 10]:.0f})")
        ratio = statistics.median(times["unknown"]) / statistics.median(times["enrolled"])
        ratios.append(ratio)
        all_same = all_same and same
        print(f"| {run} | {row[0]} | {row[1]} | {ratio:.3f} | {'yes' if same else 'no: ' + str(len(answers['enrolled'] | answers['unknown'])) + ' different answers'} |")
    print()
    print(f"Median of the runs' ratios: {statistics.median(ratios):.3f}. "
          f"Reproduce: `python3 scripts/bench/enumeration_timing.py --bin {args.bin} --pushes {args.pushes} --runs {args.runs}`.")
    if not all_same:
        sys.exit("the answers differ between an enrolled and an unknown id")


if __name__ == "__main__":
    main()

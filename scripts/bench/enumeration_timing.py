#!/usr/bin/env python3
"""Can a client without a key tell enrolled agent ids from unknown ones by how fast the collector
refuses a push? (red team, third pass, item a). Starts a release collector with one enrolled agent,
then sends N pushes alternating between the enrolled id and an unknown id, each with the same
well-formed but wrong 64-byte signature and the same ~2 KB body, and prints the answer times.

usage: enumeration_timing.py [--bin .build/release] [--pushes 2000]
Every push is answered 401; the script fails if any answer differs between the two ids.
"""
import argparse
import base64
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=".build/release")
    p.add_argument("--pushes", type=int, default=2000)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="sonde-enum-")
    col = None
    try:
        pub = ab.keygen(args.bin, work + "/agent.key")
        col, base = ab.collector(args.bin, work, [("eu-1", "eu", pub)])
        host, port = base.split("//")[1].split(":")
        body = ('{"agent":"X","batch_id":"b","sent_at":"2026-01-01T00:00:00Z","results":[' + ",".join(
            ['{"id":"r%d","probe":"p","component":"c","agent":"X","region":"eu","started_at":"2026-01-01T00:00:00Z",'
             '"duration_ms":1,"outcome":"ok","steps":[]}' % i for i in range(12)]) + "]}").encode()
        signature = base64.b64encode(os.urandom(64)).decode()
        times = {"enrolled": [], "unknown": []}
        answers = {"enrolled": set(), "unknown": set()}
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for i in range(args.pushes * 2):
            who = "enrolled" if i % 2 == 0 else "unknown"
            agent = "eu-1" if who == "enrolled" else "eu-9"
            headers = {"Content-Type": "application/json", "Sonde-Agent": agent, "Sonde-Agent-Signature": signature}
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
            if i >= 200:  # warm-up
                times[who].append(elapsed)
            answers[who].add((response.status, text))
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
        same = answers["enrolled"] == answers["unknown"] and len(answers["enrolled"]) == 1
        print(f"pushes per id: {len(times['enrolled'])} enrolled, {len(times['unknown'])} unknown (after 100 warm-up each), "
              f"body {len(body)} bytes, the same wrong 64-byte signature")
        print("| id | median µs | p10 µs | p90 µs |")
        print("|---|---|---|---|")
        for who in ("enrolled", "unknown"):
            xs = sorted(times[who])
            print(f"| {who} | {statistics.median(xs):.0f} | {xs[len(xs) // 10]:.0f} | {xs[len(xs) * 9 // 10]:.0f} |")
        ratio = statistics.median(times["unknown"]) / statistics.median(times["enrolled"])
        print(f"unknown/enrolled median ratio: {ratio:.3f}; answers identical: {same} {sorted(answers['enrolled'])[:1]}")
        if not same:
            sys.exit("the answers differ between an enrolled and an unknown id")
    finally:
        if col:
            ab.stop(col)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

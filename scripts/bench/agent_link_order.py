#!/usr/bin/env python3
"""Regenerates Sources/sonde-agent/link-order.txt: the functions a running agent executes, which
the release link places next to each other (Package.swift, `agentLinkerSettings`).

The kernel maps a program's code in 64 KiB windows around each page it touches ("fault-around"),
so an agent whose few hundred hot functions are scattered over 12 MiB of code keeps most of that
code resident although it runs about 1.4 MiB of it. This script runs a release agent under
valgrind's callgrind against a throwaway nginx and collector (start-up, plain GET probes, a probe
with header, body and JSON checks and an extracted value, pushes, the journal, a clean SIGTERM)
and lists every function of the agent binary that ran. Functions not in the list still link and
run; they are only placed with the cold code, so a stale list costs memory, never correctness
(`agent_memory.py` prints how many listed functions the binary still has).

usage: PATH=$PATH:/usr/sbin python3 scripts/bench/agent_link_order.py [--bin .build/release] [--seconds 40]
Needs valgrind (`apt-get install -y valgrind`); takes about a minute. Rebuild the agent afterwards:
`swift build -c release --static-swift-stdlib --product sonde-agent`.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402

OUT = os.path.join(ab.ROOT, "Sources/sonde-agent/link-order.txt")


def executed_functions(callgrind_file, binary_name):
    """Names of the functions of `binary_name` that ran, from a callgrind file written with
    --demangle=no and name compression (`fn=(id) name` the first time, `fn=(id)` after)."""
    objects, functions, current, ran = {}, {}, None, set()
    pattern = re.compile(r"^(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$")
    for line in open(callgrind_file, errors="replace"):
        m = pattern.match(line.rstrip("\n"))
        if not m:
            continue
        kind, key, name = m.groups()
        table = objects if kind in ("ob", "cob") else functions
        if name is not None:
            table[key] = name
        if kind == "ob":
            current = objects[key]
        elif kind == "fn" and current and os.path.basename(current) == binary_name:
            # valgrind tells apart same-named local functions of different objects with 'N, and
            # names code without a symbol by its address ("0x…", "(below main)"): no use to a linker.
            name = re.sub(r"'\d+$", "", functions[key])
            if not name.startswith(("0x", "(")):
                ran.add(name)
    return sorted(ran)


def coverage(binary, order_file=OUT):
    """(listed functions still in `binary`, listed functions): how stale the list is for a build."""
    listed = [line.strip() for line in open(order_file) if line.strip() and not line.startswith("#")]
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True).stdout
    present = {fields[-1] for fields in (line.split() for line in nm.splitlines()) if len(fields) >= 3}
    return sum(1 for name in listed if name in present), len(listed)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(ab.ROOT, ".build/release"), help="folder with sonde-agent and sonde-collector")
    p.add_argument("--seconds", type=int, default=40, help="how long the agent runs after start-up")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install -y valgrind")
    work = tempfile.mkdtemp(prefix="sonde-link-order-")
    try:
        target = ab.nginx(work)
        open(os.path.join(work, "www", "health.json"), "w").write('{"status": "ok", "checks": [{"name": "db", "ok": true}]}\n')
        health = target.replace("small.txt", "health.json")
        os.makedirs(work + "/probes")
        pub = ab.keygen(args.bin, work + "/agent.key")
        _, base = ab.collector(args.bin, work, [("order-1", "local", pub)])
        for i in range(4):
            ab.probe_file(f"{work}/probes/get{i}.yaml", f"get{i}", f"{target}?p={i}", "2s")
        open(f"{work}/probes/health.yaml", "w").write(f"""name: health
component: api
interval: 2s
timeout: 5s
degraded_after: 500ms
steps:
  - name: healthz
    request: {{method: GET, url: "{health}", headers: {{Accept: application/json}}}}
    assert:
      status: 200
      headers:
        Content-Type: {{matches: "^text/"}}  # nginx without mime.types
      json:
        - $.status == ok
        - {{path: "$.checks[0].ok", exists: true}}
      latency_below: 2s
""")
        open(f"{work}/probes/journey.yaml", "w").write(f"""name: journey
component: files
interval: 2s
timeout: 5s
steps:
  - name: first
    request: {{method: GET, url: "{target}"}}
    assert: {{status: 200, body_contains: benchmark}}
    extract:
      length: {{header: Content-Length}}
  - name: second
    request: {{method: GET, url: "{target}?length=${{length}}"}}
    assert: {{status: [200, 304], body_not_contains: [error]}}
""")
        open(work + "/agent.yaml", "w").write(f"""agent: {{id: order-1, region: local}}
collector: {{url: {base}, key: {work}/agent.key}}
spool: {{path: {work}/spool}}
probes: [{work}/probes]
""")
        out = os.path.join(work, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}",
                   os.path.join(args.bin, "sonde-agent"), "run", "--config", work + "/agent.yaml"]
        agent, _ = ab.start("agent", command, work, "scheduler started", timeout=120)
        time.sleep(args.seconds)
        delivered = ab.ingested(base)
        agent.send_signal(15)  # valgrind passes it on: the agent's shutdown path is in the list too
        agent.wait(timeout=120)
        if delivered == 0:
            sys.exit("the agent delivered no results under valgrind; nothing written")
        names = executed_functions(out, "sonde-agent")
        with open(args.out, "w") as f:
            f.write("# Functions a running sonde-agent executes, hot ones placed together by the release link.\n")
            f.write("# Made by scripts/bench/agent_link_order.py; regenerate after large changes to the agent.\n")
            f.write("\n".join(names) + "\n")
        print(f"{len(names)} functions written to {os.path.relpath(args.out, ab.ROOT)} ({delivered} results delivered under valgrind)")
    finally:
        ab.stop_all(work)


if __name__ == "__main__":
    main()

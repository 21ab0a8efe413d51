#!/usr/bin/env python3
"""An agent's memory with N probes configured: nginx, a collector and `sonde-agent run` with N
probe files (one GET each, every INTERVAL) as the pipeline benchmark writes them; after WAIT
seconds prints VmRSS, VmHWM, RssAnon and RssFile from /proc and the results delivered so far.
With --heaptrack the agent runs under heaptrack instead (output in --heaptrack's path, read it
with `heaptrack_print -f FILE --print-peaks 1`): its peak heap and who holds it.

usage: PATH=$PATH:/usr/sbin python3 scripts/bench/agent_memory.py --probes 4000 --interval 1h --wait 15 [--agent BIN] [--heaptrack /tmp/heap]

Anonymous memory (RssAnon) is the figure to compare between builds: the file-backed part moves
by about 1 MiB from one build to the next with the code's layout alone. --smaps adds the resident
memory of each mapped file, and how many functions of the release link's order list the binary
still has (scripts/bench/agent_link_order.py).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402
import agent_link_order  # noqa: E402


def resident_by_mapping(pid):
    """Rss per mapped path from /proc/PID/smaps ([anon] for anonymous mappings), largest first."""
    totals = {}
    name = None
    for line in open(f"/proc/{pid}/smaps"):
        head = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = head[5] if len(head) > 5 else "[anon]"
        elif head and head[0] == "Rss:":
            totals[name] = totals.get(name, 0) + int(head[1])
    return sorted(((n, k) for n, k in totals.items() if k > 0), key=lambda x: -x[1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--probes", type=int, default=500)
    p.add_argument("--interval", default="1h", help="every probe's interval (1h: loaded, none due)")
    p.add_argument("--wait", type=int, default=15, help="seconds after start-up before reading")
    p.add_argument("--bin", default=os.path.join(ab.ROOT, ".build/release"), help="folder with sonde-collector and sonde-agent (keygen)")
    p.add_argument("--agent", help="the sonde-agent to measure (default: --bin's)")
    p.add_argument("--heaptrack", help="run the agent under heaptrack, its data to this path")
    p.add_argument("--smaps", action="store_true", help="also print resident memory per mapped file (and anonymous), largest first")
    args = p.parse_args()
    agent_bin = args.agent or os.path.join(args.bin, "sonde-agent")
    work = tempfile.mkdtemp(prefix="sonde-memory-")
    try:
        target = ab.nginx(work)
        os.makedirs(work + "/probes")
        pub = ab.keygen(args.bin, work + "/agent.key")
        _, base = ab.collector(args.bin, work, [("mem-1", "local", pub)], limits=f"{{max_probes_per_agent: {max(200, args.probes)}}}")
        for i in range(args.probes):
            ab.probe_file(f"{work}/probes/get{i}.yaml", f"get{i}", f"{target}?p={i}", args.interval)
        open(work + "/agent.yaml", "w").write(f"""agent: {{id: mem-1, region: local}}
collector: {{url: {base}, key: {work}/agent.key}}
spool: {{path: {work}/spool}}
probes: [{work}/probes]
""")
        command = [agent_bin, "run", "--config", work + "/agent.yaml"]
        if args.heaptrack:
            command = ["heaptrack", "-o", args.heaptrack] + command
        agent, _ = ab.start("agent", command, work, "scheduler started")
        time.sleep(args.wait)
        if args.heaptrack:
            # heaptrack's own process runs the agent as its child: stop the agent so it writes its data.
            subprocess.run(["pkill", "-TERM", "-f", "sonde-agent run --config " + work], check=False)
            agent.wait(timeout=60)
            print(f"{args.probes} probes every {args.interval}: heaptrack data in {args.heaptrack}.zst; {ab.ingested(base)} results delivered")
            return
        fields = {k: ab.status_kib(agent.pid, k) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
        print(f"{args.probes} probes every {args.interval}, {args.wait} s after start-up: " +
              ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in fields.items()) + f"; {ab.ingested(base)} results delivered")
        if args.smaps:
            found, listed = agent_link_order.coverage(agent_bin)
            print(f"link order (Sources/sonde-agent/link-order.txt): {found} of {listed} listed functions are in this binary")
            for name, kib in resident_by_mapping(agent.pid):
                print(f"  {kib / 1024:7.2f} MiB  {name}")
    finally:
        ab.stop_all(work)


if __name__ == "__main__":
    main()

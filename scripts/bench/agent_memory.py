#!/usr/bin/env python3
"""An agent's memory with N probes configured: nginx, a collector and `sonde-agent run` with N
probe files (one GET each, every INTERVAL) as the pipeline benchmark writes them; after WAIT
seconds prints VmRSS, VmHWM, RssAnon and RssFile from /proc and the results delivered so far.
With --heaptrack the agent runs under heaptrack instead (output in --heaptrack's path, read it
with `heaptrack_print -f FILE --print-peaks 1`): its peak heap and who holds it.

usage: PATH=$PATH:/usr/sbin python3 scripts/bench/agent_memory.py --probes 4000 --interval 1h --wait 15 [--agent BIN] [--heaptrack /tmp/heap]

Anonymous memory (RssAnon) is the figure to compare between builds: the file-backed part moves
by about 1 MiB from one build to the next with the code's layout alone.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--probes", type=int, default=500)
    p.add_argument("--interval", default="1h", help="every probe's interval (1h: loaded, none due)")
    p.add_argument("--wait", type=int, default=15, help="seconds after start-up before reading")
    p.add_argument("--bin", default=os.path.join(ab.ROOT, ".build/release"), help="folder with sonde-collector and sonde-agent (keygen)")
    p.add_argument("--agent", help="the sonde-agent to measure (default: --bin's)")
    p.add_argument("--heaptrack", help="run the agent under heaptrack, its data to this path")
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
    finally:
        for proc in reversed(ab.procs):
            ab.stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

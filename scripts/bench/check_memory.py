#!/usr/bin/env python3
"""Peak memory of agents whose probes check large JSON bodies (issue 11: no probed server can
exhaust the agent). One nginx serves a JSON document of about MIB MiB (an array of small objects);
each agent runs N probes that GET it every 2 s (timeout 10 s) with a `json` check, pushing to a
collector of its own with default settings. The agents given with --agents run one after the
other on the same nginx, SECONDS each; prints each one's peak RSS (VmHWM), its runs and their
outcomes.

    PATH=$PATH:/usr/sbin python3 scripts/bench/check_memory.py --agents OLD/sonde-agent,NEW/sonde-agent \
        [--probes 40] [--mib 9] [--seconds 40] [--config-extra 'limits: {check_memory: 128MiB}']

With --bomb CODING (gzip, br or zstd; --gzip-bomb is --bomb gzip) the probes instead GET a
compression bomb (256 MiB of zeros: about 250 KiB in gzip, 200 bytes in br, 9 KiB in zstd) served
as `Content-Encoding: CODING` by a server in this script, with `Accept-Encoding: CODING` and a
status check only: what paused decoding transfers hold (br and zstd are made by the `brotli` and
`zstd` commands, which scripts/install-deps.sh installs).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_bench as ab  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--agents", required=True, help="comma-separated sonde-agent binaries")
    p.add_argument("--bin", default=os.path.join(ab.ROOT, ".build/release"), help="folder with sonde-collector and sonde-agent (keygen)")
    p.add_argument("--probes", type=int, default=40)
    p.add_argument("--mib", type=float, default=9)
    p.add_argument("--seconds", type=int, default=40)
    p.add_argument("--config-extra", default="", help="a line added to each agent's config")
    p.add_argument("--bomb", choices=["gzip", "br", "zstd"], help="probes decode a compression bomb (status check only) instead")
    p.add_argument("--gzip-bomb", action="store_const", const="gzip", dest="bomb", help="--bomb gzip")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="sonde-check-memory-")
    bomb_server = None
    try:
        if args.bomb:
            bomb_server = serve_bomb(args.bomb)
            url = f"http://127.0.0.1:{bomb_server.server_address[1]}/bomb"
            print(f"{args.probes} probes, each decoding a {args.bomb} bomb (256 MiB of zeros) every 2 s (timeout 10 s), {args.seconds} s per agent")
        else:
            target = ab.nginx(work)
            items = [{"id": i, "name": "x" * 20, "v": [1, 2, 3]} for i in range(int(args.mib * (1 << 20) / 60))]
            body = json.dumps({"items": items})
            open(os.path.join(work, "www", "big.json"), "w").write(body)
            url = target.replace("small.txt", "big.json")
            print(f"{args.probes} probes, each checking a {len(body)}-byte JSON body every 2 s (timeout 10 s), {args.seconds} s per agent")
        print("| agent | peak RSS | runs ingested | outcomes |")
        print("|---|---|---|---|")
        for n, agent_bin in enumerate(args.agents.split(",")):
            peak, ingested, outcomes = window(args, work, f"{work}/agent{n}", agent_bin, url)
            print(f"| {agent_bin} | {peak:.0f} MiB | {ingested} | {outcomes} |", flush=True)
    finally:
        if bomb_server:
            bomb_server.shutdown()
        ab.stop_all(work, grace=5)


def serve_bomb(coding):
    """A server answering every GET with 256 MiB of zeros compressed in `coding`, as its Content-Encoding."""
    zeros = bytes(256 << 20)
    if coding == "gzip":
        bomb = gzip.compress(zeros, 9)
    else:
        command = ["brotli", "-c", "-q", "5", "-w", "24"] if coding == "br" else ["zstd", "-q", "-1", "-c"]
        bomb = subprocess.run(command, input=zeros, stdout=subprocess.PIPE, check=True).stdout

    class Bomb(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(bomb)))
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                self.wfile.write(bomb)
            except OSError:
                pass  # the agent gave up (its time-out)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bomb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def window(args, work, d, agent_bin, url):
    os.makedirs(d + "/probes")
    pub = ab.keygen(args.bin, d + "/agent.key")
    col, base = ab.collector(args.bin, d, [("json-1", "local", pub)], limits=f"{{max_probes_per_agent: {max(200, args.probes)}}}")
    for i in range(args.probes):
        open(f"{d}/probes/p{i}.yaml", "w").write(f"""name: p{i}
component: api
interval: 2s
timeout: 10s
steps:
  - name: get
    request: {{method: GET, url: "{url}?p={i}"{", headers: {Accept-Encoding: " + args.bomb + "}" if args.bomb else ""}}}
    assert: {{status: 200{"" if args.bomb else ', json: ["$.items[0].id == 0"]'}}}
""")
    open(d + "/agent.yaml", "w").write(
        f"agent: {{id: json-1, region: local}}\ncollector: {{url: {base}, key: {d}/agent.key}}\nspool: {{path: {d}/spool}}\n"
        f"probes: [{d}/probes]\n{args.config_extra}\n")
    agent, _ = ab.start(os.path.basename(d), [agent_bin, "run", "--config", d + "/agent.yaml"], work, "scheduler started")
    started = time.time()
    peak = 0.0
    while time.time() - started < args.seconds:
        for line in open(f"/proc/{agent.pid}/status"):
            if line.startswith("VmHWM"):
                peak = int(line.split()[1]) / 1024
        time.sleep(1)
    outcomes = {}
    for result in json.loads(ab.get(f"{base}/v1/results?limit=1000")).get("results", []):
        key = result.get("outcome", "?") + ("/" + result["error"]["kind"] if result.get("error") else "")
        outcomes[key] = outcomes.get(key, 0) + 1
    ingested = ab.ingested(base)
    ab.stop(agent, grace=5)
    ab.stop(col, grace=5)
    return peak, ingested, ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A webhook receiver for the demo: verifies Sonde-Signature (HMAC-SHA256 of "<t>.<body>"),
prints one readable line per event and appends the event to a JSON-lines log the demo waits on.

usage: webhook_receiver.py SECRET LOGFILE   (prints "webhook-receiver http://127.0.0.1:PORT")
"""
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = sys.argv[1].encode()
LOG = sys.argv[2]
seen = set()


def verify(header, body):
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        expected = hmac.new(SECRET, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["v1"])
    except Exception:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = verify(self.headers.get("Sonde-Signature", ""), body)
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        event_id = event.get("id", "?")
        duplicate = event_id in seen
        seen.add(event_id)
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        who = ",".join(event.get("agents") or []) or event.get("agent") or ""
        regions = ",".join(event.get("regions") or [])
        line = "  webhook %s %-18s %-6s %-22s scope=%-8s regions=%-9s agents=%s signature=%s%s" % (
            time.strftime("%H:%M:%S"), event.get("type", "?"), event.get("component") or "-",
            event.get("status") or "-", event.get("scope") or "-", regions or "-", who or "-",
            "valid" if ok else "INVALID", " DUPLICATE" if duplicate else "")
        print(line, flush=True)
        with open(LOG, "a") as f:
            f.write(json.dumps({"verified": ok, "duplicate": duplicate, "event": event}) + "\n")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("webhook-receiver http://127.0.0.1:%d" % server.server_address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass

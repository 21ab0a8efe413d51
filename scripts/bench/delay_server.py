#!/usr/bin/env python3
"""A tiny HTTP server for the timing benchmark: GET /delay?ms=N answers 200 "ok" after N ms
(the delay sits between reading the request and writing the response: pure server time).
Prints "delay-server http://127.0.0.1:PORT" when listening."""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        delay = int(query.get("ms", ["0"])[0])
        if delay:
            time.sleep(delay / 1000)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"delay-server http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()

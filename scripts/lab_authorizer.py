#!/usr/bin/env python3
"""The lab's flow authorizer: what the flow_acceptor plugin asks (on AWS, a Lambda function URL).

Usage: lab_authorizer.py PORT PIDFILE RULES LOG ADDR...

POST any path with the seed's JSON input (Geneve, NetworkProtocol, TransportProtocol, Source,
Destination) and get {"Accept": true|false}. The decision comes from RULES, a JSON file read
again at every request (absent: accept everything):

  {"deny": [{"TransportProtocol": "udp", "Destination.Port": 7}, ...],
   "hang": [{"Destination.Address": "198.18.2.12"}]}

A rule matches when each of its dotted paths has that value in the input; a "deny" match
answers false, a "hang" match holds the request for 30 s without an answer (the appliance's
timeout then decides), anything else answers true. Each request is appended to LOG as one JSON
line: {"input": ..., "answer": true|false|"hang"}. Anything that is not JSON gets a 400.
"""

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def get(d, path):
    for p in path.split("."):
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def matches(rule, doc):
    return all(get(doc, k) == v for k, v in rule.items())


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, family, rules, log):
        self.address_family = family
        self.rules, self.log_path, self.lock = rules, log, threading.Lock()
        super().__init__(addr, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n)
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError:
            self.answer(400, {"error": "the body is not a JSON object"})
            return
        try:
            with open(self.server.rules) as f:
                rules = json.load(f)
        except (OSError, ValueError):
            rules = {}
        if any(matches(r, doc) for r in rules.get("hang", [])):
            verdict = "hang"
        else:
            verdict = not any(matches(r, doc) for r in rules.get("deny", []))
        with self.server.lock, open(self.server.log_path, "a") as f:
            f.write(json.dumps({"input": doc, "answer": verdict}) + "\n")
        if verdict == "hang":
            time.sleep(30)
            self.close_connection = True
            return
        self.answer(200, {"Accept": verdict})


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__.split("\n\n")[1])
    port, pidfile, rules, log, addrs = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    try:
        os.setsid()
    except OSError:
        pass
    servers = []
    for a in addrs:
        family = socket.AF_INET6 if ":" in a else socket.AF_INET
        servers.append(Server((a, port), family, rules, log))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(pidfile + ".tmp", pidfile)
    threading.Event().wait()


if __name__ == "__main__":
    main()

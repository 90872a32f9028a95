#!/usr/bin/env python3
"""A receiver for Trail's streaming tests: an HTTPS webhook endpoint, or a Splunk HTTP Event Collector.

Each accepted request body is written to OUT/<n>.json (webhook batches are what `trail verify --stream`
reads). Webhook requests are checked with examples/verify_webhook.py, the code README shows receivers;
a request that fails the check is answered 401 and counted in OUT/../rejected. While the file
OUT/../fail exists every request is answered 500 (a receiver that is down in all but name).

usage: https_receiver.py webhook|hec --cert C --key K --out DIR --port-file F [--port N]
                         (--secret S | --token T)
"""
import argparse, http.server, json, os, ssl, sys, threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "examples"))
from verify_webhook import verify_trail_webhook  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=["webhook", "hec"])
parser.add_argument("--cert", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--port-file", required=True)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--secret", default="")
parser.add_argument("--token", default="")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
lock = threading.Lock()
fail_flag = os.path.join(args.out, "..", "fail")
rejected = os.path.join(args.out, "..", "rejected")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if os.path.exists(fail_flag):
            return self.answer(500, {"text": "down for the test"})
        headers = {k.lower(): v for k, v in self.headers.items()}
        if args.mode == "webhook":
            ok = self.path == "/trail" and verify_trail_webhook(args.secret, headers, body)
        else:
            ok = self.path == "/services/collector/event" and headers.get("authorization") == "Splunk " + args.token
            # HEC bodies are JSON objects one after another; each must have an event.
            try:
                objs = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                ok = ok and all("event" in o and "time" in o for o in objs)
            except ValueError:
                ok = False
        if not ok:
            with lock, open(rejected, "a") as f:
                f.write(self.path + "\n")
            return self.answer(401 if args.mode == "webhook" else 403, {"text": "Invalid token", "code": 4})
        with lock:
            n = len(os.listdir(args.out)) + 1
            tmp = os.path.join(args.out, f".{n:06d}.tmp")
            with open(tmp, "wb") as f:
                f.write(body)
            os.rename(tmp, os.path.join(args.out, f"{n:06d}.json"))
        self.answer(200, {"text": "Success", "code": 0})


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(args.port_file + ".tmp", args.port_file)
server.serve_forever()

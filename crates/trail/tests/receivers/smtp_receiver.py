#!/usr/bin/env python3
"""An SMTP server for Trail's alert tests (aiosmtpd from PyPI): STARTTLS required before AUTH, AUTH
(PLAIN or LOGIN) required before mail, with one user. Each accepted message is written to OUT/<n>.eml.

usage: smtp_receiver.py --cert C --key K --out DIR --port-file F --user U --password P
"""
import argparse, os, socket, ssl, threading, time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--cert", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--port-file", required=True)
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
lock = threading.Lock()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        with lock:
            n = len([f for f in os.listdir(args.out) if f.endswith(".eml")]) + 1
            tmp = os.path.join(args.out, f".{n:06d}.tmp")
            with open(tmp, "wb") as f:
                f.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
                f.write(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode())
                f.write(f"X-Authenticated-As: {session.authenticated and args.user}\r\n".encode())
                f.write(f"X-Was-TLS: {session.ssl is not None}\r\n".encode())
                f.write(envelope.original_content)
            os.rename(tmp, os.path.join(args.out, f"{n:06d}.eml"))
        return "250 Message accepted"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user \
        and auth_data.password.decode() == args.password
    return AuthResult(success=ok)


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(args.cert, args.key)
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                        auth_require_tls=True, auth_required=True, authenticator=authenticator)
controller.start()
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(port))
os.rename(args.port_file + ".tmp", args.port_file)
while True:
    time.sleep(3600)

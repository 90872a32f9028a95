#!/usr/bin/env python3
"""A minimal host product page that embeds Trail's audit-log viewer (README "Embed the viewer").

Its backend mints a short-lived viewer token for the signed-in user with an API key holding the
`viewer:mint` scope, and its page frames /embed/orgs/{org}/logs with the token in the URL fragment
(the fragment is never sent to a server). Add this page's origin to the org's allowed origins
(PUT /v1/orgs/{org}/embedding) or the browser refuses to frame the viewer.

    TRAIL_URL=http://127.0.0.1:8080 TRAIL_ORG=default TRAIL_MINT_KEY=trk_… python3 host.py

Optional: PORT (default 8000; 0 picks a free one), VIEWER_FILTER (JSON, e.g. {"project": "payments"}),
VIEWER_EXPORT=1 (let the user export), THEME (query string, e.g. accent=%23aa3300&density=compact).
"""

import html
import http.server
import json
import os
import urllib.request

TRAIL_URL = os.environ["TRAIL_URL"].rstrip("/")
ORG = os.environ.get("TRAIL_ORG", "default")
MINT_KEY = os.environ["TRAIL_MINT_KEY"]


def mint_token(user):
    """POST /v1/orgs/{org}/viewer-tokens: a token for this user only, for 15 minutes."""
    body = {
        "user": user,
        "permissions": ["view", "export"] if os.environ.get("VIEWER_EXPORT") == "1" else ["view"],
        "filter": json.loads(os.environ.get("VIEWER_FILTER", "{}")),
        "ttl_secs": 900,
    }
    request = urllib.request.Request(
        f"{TRAIL_URL}/v1/orgs/{ORG}/viewer-tokens",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {MINT_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


class Host(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/":
            self.send_error(404)
            return
        # Your product knows who is signed in; this demo has one user.
        minted = mint_token({"id": "user-42", "name": "Ada Lovelace", "email": "ada@example.com"})
        theme = os.environ.get("THEME", "")
        src = f"{TRAIL_URL}{minted['embed_path']}?{theme}#token={minted['token']}"
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Your product · Audit Logs</title></head>
<body style="margin:0;font-family:sans-serif">
<header style="padding:12px 20px;background:#222;color:#fff">Your product · Organization → Admin → Audit Logs</header>
<iframe id="trail-viewer" title="Audit Logs" src="{html.escape(src)}"
        style="border:0;width:100%;height:calc(100vh - 48px)"></iframe>
</body></html>"""
        data = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        # The page carries a token: keep it out of caches.
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass  # tokens are in the pages served, not in any log


if __name__ == "__main__":
    server = http.server.HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Host)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()

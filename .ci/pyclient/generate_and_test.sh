#!/usr/bin/env bash
# Generate a Python client from Trail's OpenAPI document with openapi-python-client and run
# test_client.py with it against a running server.
#
# usage: TRAIL_URL=http://127.0.0.1:7700 TRAIL_ADMIN_PASSWORD=... ./generate_and_test.sh VENV
#
#   VENV                    virtualenv to use; created when missing (with $PYTHON, Python >= 3.11)
#   TRAIL_URL               base URL of the running server; the document is GET $TRAIL_URL/v1/openapi.json
#   TRAIL_ADMIN_PASSWORD    password of admin@localhost
#   TRAIL_BIN               optional, instead of TRAIL_URL: a trail binary to start on a free port with a
#                           fresh data directory (stopped on exit)
#   TRAIL_OPENAPI_FILE      optional: generate from this file instead of fetching the document
#   ALLOW_GENERATOR_WARNINGS=1  go on when the generator warns about the document (default: fail, since
#                           every warning means a schema or response the client silently lacks)
#   KEEP_GENERATED=1        keep the temporary directory with the document and the generated client
set -euo pipefail

GENERATOR_VERSION=0.29.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${1:-${VENV:-}}
if [[ -z "$VENV" ]]; then
  echo "usage: TRAIL_URL=... TRAIL_ADMIN_PASSWORD=... $0 VENV" >&2
  exit 2
fi
: "${TRAIL_ADMIN_PASSWORD:?set TRAIL_ADMIN_PASSWORD}"
if [[ -z "${TRAIL_URL:-}" && -z "${TRAIL_BIN:-}" ]]; then
  echo "set TRAIL_URL (a running server) or TRAIL_BIN (a binary to start)" >&2
  exit 2
fi
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  [[ -x /root/.pyenv/versions/3.12.1/bin/python3 ]] && PYTHON=/root/.pyenv/versions/3.12.1/bin/python3
fi

START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trail-pyclient.XXXXXX")
SERVER_PID=
cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [[ "${KEEP_GENERATED:-}" == 1 || $rc -ne 0 ]]; then echo "(kept $WORK)" >&2; else rm -rf "$WORK"; fi
  echo "generate_and_test: exit $rc after $((SECONDS - START))s" >&2
}
trap cleanup EXIT

step() { echo "== $* ($((SECONDS - START))s)"; }

if [[ -n "${TRAIL_BIN:-}" && -z "${TRAIL_URL:-}" ]]; then
  step "starting $TRAIL_BIN"
  # The server reads TRAIL_* variables as configuration and refuses unknown ones (TRAIL_BIN -> `bin`),
  # so this script's own variables are kept from it.
  env -u TRAIL_BIN -u TRAIL_URL -u TRAIL_OPENAPI_FILE -u TRAIL_ORG -u TRAIL_EXPORT_TIMEOUT \
    TRAIL_ADMIN_PASSWORD="$TRAIL_ADMIN_PASSWORD" "$TRAIL_BIN" serve --listen 127.0.0.1:0 \
    --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    TRAIL_URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$WORK/server.log" | head -n1)
    [[ -n "$TRAIL_URL" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "server exited" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$TRAIL_URL" ]] || { cat "$WORK/server.log" >&2; echo "server did not start" >&2; exit 1; }
  echo "server at $TRAIL_URL"
fi
export TRAIL_URL="${TRAIL_URL%/}"

step "venv $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" - <<'EOF'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"the venv's Python is {sys.version.split()[0]}; the generated client needs >= 3.11")
EOF
# The generator's post-generation hooks run `ruff` from PATH (a dependency it installs).
export PATH="$VENV/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1

step "pip install openapi-python-client==$GENERATOR_VERSION"
"$VENV/bin/python" -m pip install -q "openapi-python-client==$GENERATOR_VERSION"
"$VENV/bin/openapi-python-client" --version

DOC="$WORK/openapi.json"
if [[ -n "${TRAIL_OPENAPI_FILE:-}" ]]; then
  step "document from $TRAIL_OPENAPI_FILE"
  cp "$TRAIL_OPENAPI_FILE" "$DOC"
else
  step "fetching $TRAIL_URL/v1/openapi.json"
  "$VENV/bin/python" - "$TRAIL_URL/v1/openapi.json" "$DOC" <<'EOF'
import json, sys, time, urllib.request
url, out = sys.argv[1], sys.argv[2]
for attempt in range(50):  # the server may still be starting
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
        break
    except OSError as e:
        if attempt == 49:
            sys.exit(f"cannot fetch {url}: {e}")
        time.sleep(0.2)
doc = json.loads(body)
print(f"OpenAPI {doc.get('openapi')}, {len(doc.get('paths', {}))} paths, "
      f"{len(doc.get('components', {}).get('schemas', {}))} schemas")
open(out, "wb").write(body)
EOF
fi

step "generating the client"
GEN_FLAGS=(--fail-on-warning)
[[ "${ALLOW_GENERATOR_WARNINGS:-}" == 1 ]] && GEN_FLAGS=()
set +e
(cd "$WORK" && COLUMNS=200 openapi-python-client generate --path "$DOC" --output-path "$WORK/client" \
  --meta pdm --overwrite "${GEN_FLAGS[@]}") 2>&1 | tee "$WORK/generate.log"
GEN_RC=${PIPESTATUS[0]}
set -e
if [[ $GEN_RC -ne 0 ]]; then
  echo "FAILED: openapi-python-client $GENERATOR_VERSION rejected or warned about the document (exit $GEN_RC)." >&2
  echo "  Each WARNING / 'Unable to process schema' above is a part of the API the client would lack." >&2
  echo "  ALLOW_GENERATOR_WARNINGS=1 generates anyway." >&2
  exit 1
fi
[[ -f "$WORK/client/pyproject.toml" ]] || { echo "FAILED: no client was generated" >&2; exit 1; }

step "installing the generated client"
"$VENV/bin/python" -m pip uninstall -q -y trail-client >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q "$WORK/client"

step "running test_client.py against $TRAIL_URL"
"$VENV/bin/python" "$HERE/test_client.py"
step "done"

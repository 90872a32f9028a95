#!/usr/bin/env bash
# Prepares a running Trail server for schemathesis: signs in, creates an all-scope API key, ingests a
# few events, and creates throwaway resources whose ids pin the operations no link reaches. Prints
# NAME=value lines for schemathesis.toml.
# Usage: BASE=http://127.0.0.1:PORT TRAIL_ADMIN_PASSWORD=… setup.sh
set -euo pipefail
J='content-type: application/json'
get() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
TOKEN=$(curl -sf "$BASE/v1/auth/login" -H "$J" \
  -d "{\"email\":\"admin@localhost\",\"password\":\"$TRAIL_ADMIN_PASSWORD\"}" | get 'd["token"]')
A=(-H "authorization: Bearer $TOKEN" -H "$J")
KEY=$(curl -sf "$BASE/v1/orgs/default/api-keys" "${A[@]}" \
  -d '{"name":"schemathesis","scopes":["events:write","events:read","viewer:mint"]}' | get 'd["secret"]')
for i in 1 2 3 4 5; do
  curl -sf "$BASE/v1/orgs/default/events" -H "authorization: Bearer $KEY" -H "$J" -d "{\"id\":\"st-ev-$i\",
    \"actor\":{\"id\":\"alice@example.com\",\"ip\":\"203.0.113.7\"},\"action\":\"component.deployed\",
    \"target\":{\"type\":\"component\",\"id\":\"billing-api\"},\"project\":\"payments\",\"outcome\":\"success\",
    \"info\":{\"request_id\":\"req-$i\"}}" > /dev/null
done
ADMIN_ID=$(curl -sf "$BASE/v1/me" "${A[@]}" | get 'd["id"]')
role() { curl -sf "$BASE/v1/orgs/default/roles" "${A[@]}" -d "{\"name\":\"$1\",\"permissions\":[\"LOG-MANAGEMENT\"]}" | get 'd["id"]'; }
group() { curl -sf "$BASE/v1/orgs/default/groups" "${A[@]}" -d "{\"name\":\"$1\"}" | get 'd["id"]'; }
invite() { curl -sf "$BASE/v1/orgs/default/invitations" "${A[@]}" -d "{\"emails\":[\"$1\"],\"groups\":[\"$2\"]}"; }
ROLE_DEL=$(role st-role-del); ROLE_KEEP=$(role st-role-keep)
GROUP_DEL=$(group st-group-del); GROUP_KEEP=$(group st-group-keep)
INV_DEL=$(invite st-revoke@example.com "$GROUP_KEEP" | get 'd["invitations"][0]["id"]')
INV_TOKEN=$(invite st-accept@example.com "$GROUP_KEEP" | get 'd["invitations"][0]["accept_url"].rsplit("/",1)[1]')
# A second member the fuzzer may remove (the admin is the last administrator: 409).
T2=$(invite st-user@example.com "$GROUP_KEEP" | get 'd["invitations"][0]["accept_url"].rsplit("/",1)[1]')
USER_DEL=$(curl -sf "$BASE/v1/invitations/$T2/accept" -H "$J" -d '{"password":"st-user-password-1"}' | get 'd["id"]')
# Destinations: a webhook to a closed local port (delivery fails and retries, harmlessly) to keep, and
# a syslog one to delete.
dest() { curl -sf "$BASE/v1/orgs/default/destinations" "${A[@]}" -d "$1" | get 'd["id"]'; }
DEST_KEEP=$(dest '{"name":"st-keep","kind":"webhook","url":"http://127.0.0.1:9/trail"}')
DEST_DEL=$(dest '{"name":"st-del","kind":"syslog","address":"127.0.0.1:9","tls":false}')
# Saved searches and alert rules: one of each to keep, one to delete.
search() { curl -sf "$BASE/v1/orgs/default/searches" "${A[@]}" -d "$1" | get 'd["id"]'; }
SEARCH_KEEP=$(search '{"name":"st-keep","query":"outcome=failure"}')
SEARCH_DEL=$(search '{"name":"st-del","query":""}')
rule() { curl -sf "$BASE/v1/orgs/default/alert-rules" "${A[@]}" -d "$1" | get 'd["id"]'; }
RULE_KEEP=$(rule '{"name":"st-keep","search":"action=user.sign_in_failed","condition":{"kind":"any"}}')
RULE_DEL=$(rule '{"name":"st-del","condition":{"kind":"new_action"}}')
# A signed checkpoint covers the events (signed within a second of an append).
SIZE=0
for _ in $(seq 50); do
  SIZE=$(curl -sf "$BASE/v1/orgs/default/checkpoint" -H "authorization: Bearer $KEY" | sed -n 2p || echo 0)
  [ "${SIZE:-0}" -ge 5 ] && break
  sleep 0.2
done
NOW=$(date -u +%s)
VIEWER_DEL=$(curl -sf "$BASE/v1/orgs/default/viewer-tokens" -H "authorization: Bearer $KEY" -H "$J" \
  -d '{"user":{"id":"st-viewer"}}' | get 'd["id"]')
cat <<ENV
ST_TOKEN=$TOKEN
ST_KEY=$KEY
ST_ADMIN_ID=$ADMIN_ID
ST_ROLE_DEL=$ROLE_DEL
ST_ROLE_KEEP=$ROLE_KEEP
ST_GROUP_DEL=$GROUP_DEL
ST_GROUP_KEEP=$GROUP_KEEP
ST_INV_DEL=$INV_DEL
ST_INV_TOKEN=$INV_TOKEN
ST_USER_DEL=$USER_DEL
ST_SIZE=$SIZE
ST_DEST_KEEP=$DEST_KEEP
ST_DEST_DEL=$DEST_DEL
ST_SEARCH_KEEP=$SEARCH_KEEP
ST_SEARCH_DEL=$SEARCH_DEL
ST_RULE_KEEP=$RULE_KEEP
ST_RULE_DEL=$RULE_DEL
ST_VIEWER_DEL=$VIEWER_DEL
ST_FROM=$(date -u -d "@$((NOW - 3600))" +%Y-%m-%dT%H:%M:%SZ)
ST_TO=$(date -u -d "@$((NOW + 3600))" +%Y-%m-%dT%H:%M:%SZ)
ENV

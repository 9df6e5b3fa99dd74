#!/bin/sh
# The README's walkthrough as a script: starts dex-shim on a free loopback
# port over a fresh folder, then makes the README's calls in order and
# prints each answer. Needs curl and python3 (to read ids out of JSON).
#
#   examples/walkthrough.sh [PATH_TO_DEX_SHIM]   (default: build/dex-shim)
set -eu
shim="${1:-$(dirname "$0")/../build/dex-shim}"
data=$(mktemp -d "${TMPDIR:-/tmp}/dex-walkthrough-XXXXXX")
out="$data/serve.out"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

field() {  # field NAME: reads JSON on stdin, prints member NAME
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

KEY=$("$shim" user create --data "$data/db" --plan starter | field api_key)
"$shim" serve --data "$data/db" --listen 127.0.0.1:0 >"$out" \
  2>"$data/serve.log" &
pid=$!
while ! grep -q '^listening on ' "$out" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$data/serve.log" >&2; exit 1; }
  sleep 0.1
done
URL=$(sed -n 's/^listening on //p' "$out")
H="Authorization: Bearer $KEY"
J="Content-Type: application/json"
step() { printf '\n$ %s\n' "$*"; }

step "GET /me"
curl -s -H "$H" "$URL/me"; echo
step "GET /apikey"
curl -s -H "$H" "$URL/apikey"; echo
step "POST /apikey"
NEW=$(curl -s -H "$H" -H "$J" -d '{"name":"server-key"}' "$URL/apikey")
echo "$NEW"
step "POST /run"
RUN=$(curl -s -H "$H" -H "$J" -d '{"script":"print(\"hello\")"}' "$URL/run")
echo "$RUN"
EXEC=$(echo "$RUN" | field execution_id)
step "GET /status/$EXEC (until it ends)"
while :; do
  STATUS=$(curl -s -H "$H" "$URL/status/$EXEC")
  case "$STATUS" in *completed*|*failed*) break ;; esac
  sleep 0.2
done
echo "$STATUS"
step "GET /result/$EXEC"
curl -s -H "$H" "$URL/result/$EXEC"; echo
step "GET /me"
curl -s -H "$H" "$URL/me"; echo
KEY_ID=$(echo "$NEW" | field id)
step "DELETE /apikey/$KEY_ID"
curl -s -X DELETE -H "$H" "$URL/apikey/$KEY_ID"; echo
step "POST /run?wait=true"
curl -s -H "$H" -H "$J" -d '{"script":"print(\"hello\")"}' "$URL/run?wait=true"
echo

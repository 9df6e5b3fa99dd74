#!/bin/sh
# client_py_test: runs examples/client.py against a dex-shim of its own
# on a free loopback port and checks that "hello" comes back.
# Usage: client_test.sh DEX_SHIM CLIENT_PY
set -eu
shim="$1"
client="$2"
data=$(mktemp -d "${TMPDIR:-/tmp}/dex-client-XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

key=$("$shim" user create --data "$data/db" --plan starter |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
"$shim" serve --data "$data/db" --listen 127.0.0.1:0 >"$data/out" \
  2>"$data/log" &
pid=$!
while ! grep -q '^listening on ' "$data/out" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$data/log" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$data/out")
export DEX_URL="$url" DEX_API_KEY="$key"

echo 'print("hello")' >"$data/hello.py"
out=$(python3 "$client" run --wait "$data/hello.py")
[ "$out" = "hello" ] || { echo "run --wait printed: $out" >&2; exit 1; }

queued=$(python3 "$client" run "$data/hello.py")
id=$(echo "$queued" | python3 -c 'import json,sys; print(json.load(sys.stdin)["execution_id"])')
python3 "$client" status "$id" | grep -q '"execution_id"'
# The run finishes; its result then carries hello.
for _ in $(seq 100); do
  python3 "$client" status "$id" | grep -q '"completed"' && break
  sleep 0.1
done
python3 "$client" result "$id" | grep -q '"stdout": "hello\\n"'

# An error answer goes to stderr with exit code 1.
if DEX_API_KEY=dex_live_bad python3 "$client" status "$id" 2>"$data/err"; then
  echo "a bad key was accepted" >&2; exit 1
fi
grep -q "401" "$data/err"
echo "client.py: ok"

#!/usr/bin/env bash
# API fuzzing of fogd from docs/openapi.json with schemathesis (issue 10).
#   tests/fuzz/run.sh [MAX_EXAMPLES]      (default 200 examples per operation)
# Starts a fresh fogd on a temporary data dir, fuzzes every documented operation except
# managed-instance PUT (each valid one would provision real PostgreSQL servers; set
# FUZZ_INSTANCE_PUT_EXAMPLES=N to fuzz it too with N examples, N kept small), with positive
# and negative data, a 10 s request timeout (a hang is a failure), and fails on any 5xx or
# timeout. Requests and statuses are counted from fogd's own /metrics counters.
# Env: FUZZ_VENV (default tests/fuzz/.venv), FUZZ_WORKERS (default 8), FOGD (binary;
# default target/debug/fogd, built with --all-features if missing), FUZZ_KEEP=1 keeps the data dir.
set -euo pipefail

max_examples="${1:-200}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${FUZZ_VENV:-$here/.venv}"
workers="${FUZZ_WORKERS:-8}"
instance_put="${FUZZ_INSTANCE_PUT_EXAMPLES:-0}"
schemathesis_version="3.39.16"
# schemathesis 3.39 breaks with hypothesis >= 6.131 ('many' object has no attribute 'more').
hypothesis_version="6.122.3"
fogd="${FOGD:-$root/target/debug/fogd}"

if [ ! -x "$venv/bin/st" ] || [ "$("$venv/bin/st" --version 2>/dev/null | awk '{print $3}')" != "$schemathesis_version" ] \
    || ! "$venv/bin/pip" show hypothesis 2>/dev/null | grep -qx "Version: $hypothesis_version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==$schemathesis_version" "hypothesis==$hypothesis_version"
fi
if [ ! -x "$fogd" ]; then
    (cd "$root" && cargo build -q -p fogd --all-features --bin fogd)
fi

data="$(mktemp -d /tmp/fogd-fuzz.XXXXXX)"
chmod 755 "$data"
log="$data/fogd.log"
"$fogd" serve --data-dir "$data/fogd" --listen 127.0.0.1:0 >"$log" 2>&1 &
fogd_pid=$!
cleanup() {
    if kill -0 "$fogd_pid" 2>/dev/null; then
        kill -TERM "$fogd_pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$fogd_pid" 2>/dev/null || break; sleep 1; done
    fi
    if [ "${FUZZ_KEEP:-0}" != 1 ]; then rm -rf "$data"; else echo "fuzz: data kept in $data" >&2; fi
}
trap cleanup EXIT
for _ in $(seq 1 120); do
    [ -s "$data/fogd/api-url" ] && [ -s "$data/fogd/admin-token" ] && break
    kill -0 "$fogd_pid" 2>/dev/null || { echo "fuzz: fogd exited; log:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.5
done
url="$(cat "$data/fogd/api-url")"
token="$(cat "$data/fogd/admin-token")"
ca="$data/fogd/ca.pem"
metrics() { curl -sS --cacert "$ca" -H "Authorization: Bearer $token" "$url/metrics"; }
# Sum of fogd_api_requests_total, optionally only the statuses matching a regex.
count() {
    metrics | awk -v re="${1:-.}" '/^fogd_api_requests_total\{/ {
        if (match($0, /status="[0-9]+"/)) { s = substr($0, RSTART + 8, 3); if (s ~ re) n += $NF } }
        END { printf "%d\n", n }'
}
before="$(count)"

st_run() {
    "$venv/bin/st" run "$root/docs/openapi.json" \
        --base-url "$url" \
        -H "Authorization: Bearer $token" \
        --request-tls-verify "$ca" \
        --request-timeout 10000 \
        --checks not_a_server_error \
        -D all \
        --workers "$workers" \
        --hypothesis-deadline None \
        --hypothesis-suppress-health-check all \
        --no-color \
        "$@"
}
start="$(date +%s)"
rc=0
st_run --hypothesis-max-examples "$max_examples" \
    --exclude-operation-id ManagedInstances_CreateOrUpdate 2>&1 | tee "$data/st.log" || rc=$?
if [ "$instance_put" -gt 0 ]; then
    st_run --hypothesis-max-examples "$instance_put" \
        --include-operation-id ManagedInstances_CreateOrUpdate 2>&1 | tee -a "$data/st.log" || rc=$?
fi
elapsed=$(( $(date +%s) - start ))

# Less the /metrics request that read `before` (each is counted once answered).
total=$(( $(count) - before - 1 ))
server_errors="$(count '^5')"
timeouts="$(grep -aciE 'timed out|timeout' "$data/st.log" || true)"
echo "fuzz: statuses: $(metrics | awk '/^fogd_api_requests_total\{/ { if (match($0, /status="[0-9]+"/)) c[substr($0, RSTART + 8, 3)] += $NF } END { for (s in c) printf "%s=%d ", s, c[s] }')"
echo "fuzz: $total requests, $server_errors server errors, $timeouts timeouts in ${elapsed}s (schemathesis exit $rc, max examples $max_examples)"
if [ "$server_errors" -ne 0 ] || [ "$timeouts" -ne 0 ] || [ "$rc" -ne 0 ]; then
    cp "$data/st.log" "$root/target/fuzz-st.log" 2>/dev/null || true
    echo "fuzz: FAILED (schemathesis log copied to target/fuzz-st.log)" >&2
    exit 1
fi

#!/usr/bin/env bash
# Several fogd nodes on one machine: three etcd members and three fogd nodes.
#
#   scripts/cluster.sh up      # start (builds fogd with --all-features if needed)
#   scripts/cluster.sh status  # processes, node records, owners, etcd member health
#   scripts/cluster.sh down    # stop the nodes, their PostgreSQL servers and etcd
#
# Everything lives under $FOGD_CLUSTER_ROOT (default /tmp/fogd-cluster):
#   etcd/m{1,2,3}/         etcd members, clients on 127.0.0.1:23{7,8,9}1
#   shared/                the cluster directory every node shares (--cluster-dir):
#                          ca.pem, tls/, admin-token, subscription-id, keys/, instances/
#   n{1,2,3}/              each node's data directory (client.toml, api-url, fogd.lock)
#   n{1,2,3}.log           each node's log
#   client.toml            for fogctl (FOGCTL_CONFIG): every node's endpoint, the CA, the token
# Node i serves the API on 127.0.0.1:84{4+i}3 (8453, 8463, 8473) and its listeners on
# 127.0.0.1{i} (127.0.0.11, 127.0.0.12, 127.0.0.13), the same ports on every node.
set -euo pipefail

ROOT=${FOGD_CLUSTER_ROOT:-/tmp/fogd-cluster}
REPO=$(cd "$(dirname "$0")/.." && pwd)
FOGD=${FOGD_BIN:-$REPO/target/debug/fogd}
ETCD=${FOGD_ETCD_BIN:-/usr/bin/etcd}
CLIENT_PORTS=(2371 2381 2391)
PEER_PORTS=(2372 2382 2392)
STORE="etcd://127.0.0.1:2371,127.0.0.1:2381,127.0.0.1:2391"

# Reads every key under a prefix through etcd's JSON gateway (no etcdctl needed).
etcd_get_prefix() {
    python3 - "$1" <<'PY'
import base64, json, sys, urllib.request
prefix = sys.argv[1].encode()
end = prefix[:-1] + bytes([prefix[-1] + 1])
body = json.dumps({"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(end).decode()}).encode()
for port in (2371, 2381, 2391):
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v3/kv/range", body), timeout=2) as r:
            kvs = json.load(r).get("kvs", [])
    except OSError:
        continue
    for kv in kvs:
        key = base64.b64decode(kv["key"]).decode()
        value = json.loads(base64.b64decode(kv["value"]))
        print(f"  {key}  lease={int(kv.get('lease', 0)):x}  {json.dumps(value.get('data'))}")
    break
PY
}

etcd_health() {
    for c in "${CLIENT_PORTS[@]}"; do
        printf '  etcd 127.0.0.1:%s %s\n' "$c" "$(curl -s -m 2 "http://127.0.0.1:$c/health" || echo unreachable)"
    done
}

api_port() { echo $((8443 + 10 * $1)); }

up() {
    mkdir -p "$ROOT/etcd" "$ROOT/shared"
    chmod 755 "$ROOT"
    [ -x "$FOGD" ] || (cd "$REPO" && cargo build --all-features -p fogd)
    local initial=""
    for i in 1 2 3; do
        initial+="m$i=http://127.0.0.1:${PEER_PORTS[$((i - 1))]},"
    done
    initial=${initial%,}
    for i in 1 2 3; do
        local c=${CLIENT_PORTS[$((i - 1))]} p=${PEER_PORTS[$((i - 1))]}
        "$ETCD" --name "m$i" --data-dir "$ROOT/etcd/m$i" \
            --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --initial-cluster-token fogd-cluster --auto-compaction-retention 1 \
            >"$ROOT/etcd/m$i.log" 2>&1 &
        echo $! >"$ROOT/etcd/m$i.pid"
    done
    for _ in $(seq 100); do
        curl -s -m 1 "http://127.0.0.1:${CLIENT_PORTS[0]}/health" | grep -q '"true"' && break
        sleep 0.2
    done
    for i in 1 2 3; do
        FOGD_NODE=n$i "$FOGD" serve --store "$STORE" --cluster-dir "$ROOT/shared" \
            --data-dir "$ROOT/n$i" --listen "127.0.0.1:$(api_port "$i")" \
            --listener-host "127.0.0.1$i" --listener-ports 16000-16999 \
            --server-ports 15000-15999 "${@:2}" >"$ROOT/n$i.log" 2>&1 &
        echo $! >"$ROOT/n$i.pid"
        # The first node creates the shared certificates, token and key.
        for _ in $(seq 300); do [ -s "$ROOT/n$i/api-url" ] && break; sleep 0.1; done
        [ -s "$ROOT/n$i/api-url" ] || { echo "node n$i did not start; see $ROOT/n$i.log" >&2; exit 1; }
        echo "node n$i: $(cat "$ROOT/n$i/api-url") (listeners on 127.0.0.1$i)"
    done
    # One client config naming every node: fogctl uses the first that answers.
    {
        echo "# Written by scripts/cluster.sh: every node of the cluster, tried in order."
        printf 'endpoints = ["%s", "%s", "%s"]\n' "$(cat "$ROOT/n1/api-url")" "$(cat "$ROOT/n2/api-url")" "$(cat "$ROOT/n3/api-url")"
        echo "ca_file = \"$ROOT/shared/ca.pem\""
        echo "token_file = \"$ROOT/shared/admin-token\""
        echo "subscription_id = \"$(cat "$ROOT/shared/subscription-id")\""
    } >"$ROOT/client.toml"
    echo "fogctl: export FOGCTL_CONFIG=$ROOT/client.toml   (every node, first that answers)"
}

status() {
    for i in 1 2 3; do
        local pid; pid=$(cat "$ROOT/n$i.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "n$i: running (pid $pid)"; else echo "n$i: down"; fi
    done
    echo "etcd members:"
    etcd_health
    echo "nodes (each bound to its lease):"
    etcd_get_prefix /fogd/nodes/
    echo "owners:"
    etcd_get_prefix /fogd/owners/
}

down() {
    for i in 1 2 3; do
        [ -f "$ROOT/n$i.pid" ] && kill "$(cat "$ROOT/n$i.pid")" 2>/dev/null || true
        rm -f "$ROOT/n$i.pid"
    done
    sleep 1
    # The nodes leave the servers running (other nodes use them): stop them here.
    for d in "$ROOT"/shared/instances/*/pgdata; do
        [ -f "$d/postmaster.pid" ] || continue
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl stop -m fast -D "$d" >/dev/null 2>&1 || true
        else
            /usr/lib/postgresql/15/bin/pg_ctl stop -m fast -D "$d" >/dev/null 2>&1 || true
        fi
    done
    for i in 1 2 3; do
        [ -f "$ROOT/etcd/m$i.pid" ] || continue
        local pid; pid=$(cat "$ROOT/etcd/m$i.pid")
        kill "$pid" 2>/dev/null || true
        # A member left without quorum may linger: give it 5 s, then SIGKILL.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$ROOT/etcd/m$i.pid"
    done
    echo "stopped (data kept in $ROOT; remove it to start afresh)"
}

case "${1:-}" in
    up) up "$@" ;;
    status) status ;;
    down) down ;;
    *) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac

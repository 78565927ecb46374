#!/usr/bin/env bash
# Quickstart: builds fogd, starts it on embedded defaults (if it is not running), creates two
# managed instances in two regions and a database through the ARM API, and prints how to
# connect. Safe to run again: every step is idempotent. `--teardown` deletes what it made
# and stops fogd.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${FOGD_DATA_DIR:-/var/tmp/fogd-quickstart}"
LISTEN="${FOGD_LISTEN:-127.0.0.1:8443}"
RG=quickstart
API="api-version=2025-01-01"

./scripts/install-deps.sh
echo "== building fogd"
cargo build -q --release -p fogd --bin fogd

running() { [ -s "$DATA/fogd.pid" ] && kill -0 "$(cat "$DATA/fogd.pid")" 2>/dev/null; }

if [ "${1:-}" = "--teardown" ]; then
  if running; then
    URL=$(cat "$DATA/api-url"); TOKEN=$(cat "$DATA/admin-token"); SUB=$(cat "$DATA/subscription-id")
    for mi in qs-east qs-west; do
      curl -sS --cacert "$DATA/ca.pem" -H "Authorization: Bearer $TOKEN" -X DELETE \
        "$URL/subscriptions/$SUB/resourceGroups/$RG/providers/Microsoft.Sql/managedInstances/$mi?$API" -o /dev/null
    done
    sleep 3
    kill "$(cat "$DATA/fogd.pid")"
    echo "fogd stopped; data left in $DATA (rm -rf it to start from scratch)"
  else
    echo "fogd is not running"
  fi
  exit 0
fi

mkdir -p "$DATA"; chmod 711 "$DATA"
if running; then
  echo "== fogd already running (pid $(cat "$DATA/fogd.pid"))"
else
  echo "== starting fogd (data: $DATA, API: https://$LISTEN)"
  rm -f "$DATA/api-url"
  nohup ./target/release/fogd serve --data-dir "$DATA" --listen "$LISTEN" >>"$DATA/fogd.log" 2>&1 &
  echo $! > "$DATA/fogd.pid"
  for _ in $(seq 1 100); do [ -s "$DATA/api-url" ] && break; sleep 0.1; done
  [ -s "$DATA/api-url" ] || { tail -20 "$DATA/fogd.log"; exit 1; }
fi
URL=$(cat "$DATA/api-url"); TOKEN=$(cat "$DATA/admin-token"); SUB=$(cat "$DATA/subscription-id")
BASE="$URL/subscriptions/$SUB/resourceGroups/$RG/providers/Microsoft.Sql"

# arm METHOD PATH [BODY] -> prints the JSON body; on 202 waits for the operation.
arm() {
  local method=$1 path=$2 body=${3:-} hdr out code
  hdr=$(mktemp); out=$(mktemp)
  code=$(curl -sS --cacert "$DATA/ca.pem" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -X "$method" ${body:+-d "$body"} -D "$hdr" -o "$out" -w '%{http_code}' "$BASE/$path?$API")
  if [ "$code" = 202 ]; then
    local status_url status
    status_url=$(grep -i '^azure-asyncoperation:' "$hdr" | cut -d' ' -f2 | tr -d '\r')
    while :; do
      status=$(curl -sS --cacert "$DATA/ca.pem" -H "Authorization: Bearer $TOKEN" "$status_url")
      case "$status" in *'"InProgress"'*) sleep 0.5;; *'"Succeeded"'*) break;; *) echo "$status" >&2; exit 1;; esac
    done
  elif [ "${code:0:1}" != 2 ]; then
    cat "$out" >&2; echo >&2; exit 1
  fi
  cat "$out"; rm -f "$hdr" "$out"
}

PASSWORD='Quickstart-Passw0rd!'
echo "== managed instance qs-east in eastus"
arm PUT managedInstances/qs-east "{\"location\":\"eastus\",\"sku\":{\"name\":\"GP_Gen5\"},\"properties\":{\"administratorLogin\":\"fogadmin\",\"administratorLoginPassword\":\"$PASSWORD\",\"storageSizeInGB\":64}}" >/dev/null
EAST_ID="/subscriptions/$SUB/resourceGroups/$RG/providers/Microsoft.Sql/managedInstances/qs-east"
echo "== managed instance qs-west in westus (sharing qs-east's DNS zone)"
arm PUT managedInstances/qs-west "{\"location\":\"westus\",\"sku\":{\"name\":\"GP_Gen5\"},\"properties\":{\"administratorLogin\":\"fogadmin\",\"administratorLoginPassword\":\"$PASSWORD\",\"storageSizeInGB\":64,\"dnsZonePartner\":\"$EAST_ID\"}}" >/dev/null
echo "== database appdb on qs-east"
arm PUT managedInstances/qs-east/databases/appdb '{}' >/dev/null

endpoint() { arm GET "managedInstances/$1" | python3 -c 'import json,sys; p=json.load(sys.stdin)["properties"]; print(p["postgresEndpoint"]["host"], p["postgresEndpoint"]["port"], p["fullyQualifiedDomainName"])'; }
read -r EH EP EF < <(endpoint qs-east)
read -r WH WP WF < <(endpoint qs-west)
PGPASSWORD="$PASSWORD" psql -h "$EH" -p "$EP" -U fogadmin -d appdb -qAtc \
  "CREATE TABLE IF NOT EXISTS hello(id serial primary key, at timestamptz default now()); INSERT INTO hello DEFAULT VALUES; SELECT 'appdb has ' || count(*) || ' row(s)' FROM hello"

cat <<EOT

fogd is running:  $URL   (CA: $DATA/ca.pem, token: $DATA/admin-token, log: $DATA/fogd.log)
  qs-east  $EF  ->  $EH:$EP
  qs-west  $WF  ->  $WH:$WP

Connect:
  PGPASSWORD='$PASSWORD' psql -h $EH -p $EP -U fogadmin -d appdb
  PGPASSWORD='$PASSWORD' psql -h $WH -p $WP -U fogadmin -d postgres

Call the API:
  curl --cacert $DATA/ca.pem -H "Authorization: Bearer \$(cat $DATA/admin-token)" \\
    "$BASE/managedInstances?$API"

Tear down:  ./scripts/quickstart.sh --teardown
EOT

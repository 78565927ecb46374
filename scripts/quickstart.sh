#!/usr/bin/env bash
# Quickstart: the whole product in one command.
#
#   ./scripts/quickstart.sh              build, start fogd, create a failover group, prove a
#                                        failover and a failback lose no acknowledged write
#   ./scripts/quickstart.sh --teardown   delete the group and the instances, stop fogd
#   ./scripts/quickstart.sh --stop       only stop fogd (and its servers); run again to restart
#
# Builds fogd and fogctl (release; FOGD_BUILD_PROFILE=debug reuses a debug build), starts
# fogd on embedded defaults if it is not running (data FOGD_DATA_DIR, default
# /var/tmp/fogd-quickstart; API FOGD_LISTEN, default 127.0.0.1:8443), then, with fogctl
# only: two managed instances in two regions (qs-east in eastus, qs-west in westus sharing
# its DNS zone), a database `app` and the failover group qs-fog. It runs a write load
# through the group's read-write listener, fails over to the secondary and back while it
# runs, and checks that every acknowledged row is on the primary and on the secondary.
# Everything is left running. Safe to run again: what exists is kept.
set -euo pipefail

usage() {
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
}
TEARDOWN=false STOP_ONLY=false
case "${1:-}" in
  "") ;;
  --teardown) TEARDOWN=true ;;
  --stop) TEARDOWN=true STOP_ONLY=true ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

DATA=$(realpath -m "${FOGD_DATA_DIR:-/var/tmp/fogd-quickstart}")
cd "$(dirname "$0")/.."
ROOT=$PWD
LISTEN="${FOGD_LISTEN:-127.0.0.1:8443}"
PROFILE="${FOGD_BUILD_PROFILE:-release}"
PG_BIN="${FOGD_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")
RG=quickstart
EAST=qs-east EAST_LOC=eastus
WEST=qs-west WEST_LOC=westus
FOG=qs-fog
DB=app
PWFILE="$DATA/quickstart-password"
# How to call this script again for the same fogd (printed in hints).
QS_ENV=""
[ "$DATA" = /var/tmp/fogd-quickstart ] || QS_ENV="FOGD_DATA_DIR=$DATA "

step() { printf '== %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }
export LC_NUMERIC=C
now() { printf '%s' "$EPOCHREALTIME"; }
# `since T`: seconds elapsed since `now` said T, e.g. "2.3 s".
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }'; }

./scripts/install-deps.sh
PSQL="$PG_BIN/psql"
[ -x "$PSQL" ] || PSQL=$(command -v psql) || die "psql not found (install postgresql-client-15)"

case "$PROFILE" in
  release) build=(--release) dir=release ;;
  debug | dev) build=() dir=debug ;;
  *) die "FOGD_BUILD_PROFILE must be release or debug, not '$PROFILE'" ;;
esac
FOGD_BIN="$TARGET/$dir/fogd"
FOGCTL_BIN="$TARGET/$dir/fogctl"
if $TEARDOWN && ! { [ -x "$FOGCTL_BIN" ] && [ -x "$FOGD_BIN" ]; }; then
  # Tearing down needs no fresh build: any existing one will do.
  for d in release debug; do
    if [ -x "$TARGET/$d/fogctl" ] && [ -x "$TARGET/$d/fogd" ]; then
      FOGD_BIN="$TARGET/$d/fogd" FOGCTL_BIN="$TARGET/$d/fogctl"
      break
    fi
  done
fi
if ! $TEARDOWN || ! [ -x "$FOGCTL_BIN" ] || ! [ -x "$FOGD_BIN" ]; then
  note=""
  [ -x "$FOGD_BIN" ] || note="; the first build takes a few minutes"
  step "building fogd and fogctl ($dir$note)"
  cargo build -q "${build[@]}" -p fogd -p fogctl
fi

# fogctl finds this fogd through DATA/client.toml only, whatever the caller's environment says.
unset FOGCTL_ENDPOINT FOGCTL_CA FOGCTL_TOKEN FOGCTL_CONFIG FOGCTL_SUBSCRIPTION
export FOGCTL_POLL_INTERVAL_MS="${FOGCTL_POLL_INTERVAL_MS:-250}"
fogctl() { "$FOGCTL_BIN" --data-dir "$DATA" "$@" </dev/null; }

# `exists CMD…`: runs a fogctl `show`; 0 if found, 1 if not found, exits on any other error.
exists() {
  local err
  if err=$(fogctl "$@" 2>&1 >/dev/null); then return 0; fi
  case "$err" in *NotFound* | *DoesNotExist*) return 1 ;; esac
  printf '%s\n' "$err" >&2
  exit 1
}

# The pid of this data directory's fogd, if it runs.
fogd_pid() {
  local pid
  pid=$(cat "$DATA/fogd.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'fogd serve' || return 1
  echo "$pid"
}

start_fogd() {
  local pid
  if pid=$(fogd_pid); then
    step "fogd already running (pid $pid, $(cat "$DATA/api-url" 2>/dev/null || echo "API $LISTEN"))"
    return
  fi
  mkdir -p "$DATA"
  chmod 711 "$DATA"
  rm -f "$DATA/api-url"
  # Its own session: a Ctrl-C of this script does not reach it.
  setsid "$FOGD_BIN" serve --data-dir "$DATA" --listen "$LISTEN" </dev/null >>"$DATA/fogd.log" 2>&1 &
  pid=$!
  echo "$pid" >"$DATA/fogd.pid"
  for _ in $(seq 1 300); do
    [ -s "$DATA/api-url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! [ -s "$DATA/api-url" ]; then
    tail -20 "$DATA/fogd.log" >&2
    die "fogd did not start (log: $DATA/fogd.log)"
  fi
  step "started fogd (pid $pid, $(cat "$DATA/api-url"), data $DATA)"
}

# `group_json LOC`: the group as seen from LOC, as JSON.
group_json() { fogctl sql instance-failover-group show -g "$RG" -l "$1" -n "$FOG"; }
# `group_facts`: shell assignments describing the group (roles, listeners, state).
group_facts() {
  group_json "$EAST_LOC" | python3 -c '
import json, shlex, sys
g = json.load(sys.stdin)["properties"]
l = g.get("listeners", {})
rw, ro = l.get("readWrite", {}), l.get("readOnly", {})
facts = {
    "EAST_ROLE": g.get("replicationRole", ""),
    "STATE": g.get("replicationState", ""),
    "RW_HOST": rw.get("host", ""), "RW_PORT": rw.get("port", ""), "RW_NAME": rw.get("hostName", ""),
    "RO_HOST": ro.get("host", ""), "RO_PORT": ro.get("port", ""), "RO_NAME": ro.get("hostName", ""),
}
for k, v in facts.items():
    print(f"{k}={shlex.quote(str(v))}")
'
}
load_facts() {
  local facts
  facts=$(group_facts) || die "cannot read failover group $FOG"
  eval "$facts"
  if [ "$EAST_ROLE" = Primary ]; then
    PRIMARY=$EAST PRIMARY_LOC=$EAST_LOC SECONDARY=$WEST SECONDARY_LOC=$WEST_LOC
  else
    PRIMARY=$WEST PRIMARY_LOC=$WEST_LOC SECONDARY=$EAST SECONDARY_LOC=$EAST_LOC
  fi
}

stop_fogd() {
  local pid
  pid=$(fogd_pid) || die "fogd is not running"
  step "stopping fogd (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then die "fogd (pid $pid) did not stop within 60 s"; fi
  rm -f "$DATA/fogd.pid"
}

# ---------------------------------------------------------------------------------------
if $STOP_ONLY; then
  if fogd_pid >/dev/null; then
    stop_fogd
    echo "fogd stopped with its servers; the group, instances and data stay. Start it again: ${QS_ENV}./scripts/quickstart.sh"
  else
    echo "fogd is not running"
  fi
  exit 0
fi
if $TEARDOWN; then
  if ! fogd_pid >/dev/null; then
    if ! [ -s "$DATA/store.sqlite" ]; then
      echo "fogd is not running and $DATA holds no fogd data: nothing to tear down"
      exit 0
    fi
    start_fogd # to delete what it manages, then stop it
  fi
  ok=true # a failed delete is reported, and fogd is stopped all the same
  for loc in "$EAST_LOC" "$WEST_LOC"; do
    if exists sql instance-failover-group show -g "$RG" -l "$loc" -n "$FOG"; then
      # A group is deleted at its primary's location.
      loc=$(group_json "$loc" | python3 -c '
import json, sys
g = json.load(sys.stdin)
p = g["properties"]
print(g["id"].split("/locations/")[1].split("/")[0] if p.get("replicationRole") == "Primary"
      else p["partnerRegions"][0]["location"])') || loc=$EAST_LOC
      step "deleting failover group $FOG (at the primary's location, $loc)"
      fogctl sql instance-failover-group delete -g "$RG" -l "$loc" -n "$FOG" >/dev/null || ok=false
      break
    fi
  done
  for mi in "$WEST" "$EAST"; do
    if exists sql mi show -g "$RG" -n "$mi"; then
      step "deleting managed instance $mi"
      fogctl sql mi delete -g "$RG" -n "$mi" --yes >/dev/null || ok=false
    fi
  done
  stop_fogd
  echo "fogd stopped. Its data is left in $DATA; remove it with: rm -rf $DATA"
  $ok || die "some deletes failed (see above)"
  exit 0
fi

# ---------------------------------------------------------------------------------------
start_fogd

if ! [ -s "$PWFILE" ]; then
  if exists sql mi show -g "$RG" -n "$EAST"; then
    die "$PWFILE is missing but $EAST exists: run ./scripts/quickstart.sh --teardown and rm -rf $DATA"
  fi
  (
    umask 077
    python3 -c 'import secrets, string
a = string.ascii_letters + string.digits
print("Qs1-" + "".join(secrets.choice(a) for _ in range(24)))' >"$PWFILE.tmp"
  )
  mv "$PWFILE.tmp" "$PWFILE"
fi
chmod 600 "$PWFILE"
PASSWORD=$(cat "$PWFILE")

# `ensure_mi NAME LOCATION [FLAGS…]`
ensure_mi() {
  local name=$1 loc=$2 t
  shift 2
  if exists sql mi show -g "$RG" -n "$name"; then
    step "managed instance $name ($loc): exists"
    return
  fi
  step "managed instance $name ($loc): creating"
  t=$(now)
  FOGCTL_ADMIN_PASSWORD=$PASSWORD fogctl sql mi create -g "$RG" -n "$name" -l "$loc" -u fogadmin "$@" >/dev/null
  step "managed instance $name: created in $(since "$t")"
}
ensure_mi "$EAST" "$EAST_LOC"
ensure_mi "$WEST" "$WEST_LOC" --dns-zone-partner "$EAST"

if exists sql instance-failover-group show -g "$RG" -l "$EAST_LOC" -n "$FOG"; then
  load_facts
  if exists sql midb show -g "$RG" --mi "$PRIMARY" -n "$DB"; then
    step "database $DB: exists"
  else
    step "database $DB on $PRIMARY: creating"
    fogctl sql midb create -g "$RG" --mi "$PRIMARY" -n "$DB" >/dev/null
  fi
  step "failover group $FOG: exists ($PRIMARY primary in $PRIMARY_LOC, $SECONDARY secondary in $SECONDARY_LOC)"
else
  if exists sql midb show -g "$RG" --mi "$EAST" -n "$DB"; then
    step "database $DB on $EAST: exists"
  else
    step "database $DB on $EAST: creating"
    fogctl sql midb create -g "$RG" --mi "$EAST" -n "$DB" >/dev/null
  fi
  step "failover group $FOG ($EAST -> $WEST): creating (seeds $WEST)"
  t=$(now)
  fogctl sql instance-failover-group create -g "$RG" -n "$FOG" --mi "$EAST" --partner-mi "$WEST" \
    --failover-policy Manual >/dev/null
  step "failover group $FOG: created in $(since "$t")"
  load_facts
fi
RW="host=$RW_HOST port=$RW_PORT"
RO="host=$RO_HOST port=$RO_PORT"

# `pg CONNINFO ARGS…`: psql as fogadmin to the database, quiet, unaligned, tuples only.
pg() {
  local conn=$1
  shift
  PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=10 PGAPPNAME=fogd-quickstart \
    "$PSQL" "$conn user=fogadmin dbname=$DB options='-c statement_timeout=15000'" \
    -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}

# `wait_streaming`: until the health monitor sees both members healthy and replicating.
wait_streaming() {
  local v
  for _ in $(seq 1 240); do
    v=$(group_json "$PRIMARY_LOC" | python3 -c '
import json, sys
p = json.load(sys.stdin)["properties"]
h = p.get("health", {})
ok = (p.get("replicationRole") == "Primary" and p.get("replicationState") == "CATCH_UP"
      and h.get("primary", {}).get("status", "Healthy") == "Healthy"
      and h.get("secondary", {}).get("status", "Healthy") == "Healthy")
print("yes" if ok else p.get("replicationState", "?"))') || v=error
    [ "$v" = yes ] && return 0
    sleep 0.25
  done
  die "the secondary is not replicating (state $v); see: $FOGCTL_BIN --data-dir $DATA sql instance-failover-group watch"
}

# --- write load ------------------------------------------------------------------------
WORK="$DATA/quickstart-load" # this run's acknowledged ids; removed at the end
rm -rf "$WORK"
mkdir -m 700 "$WORK"
ACKED="$WORK/acked" FAILED="$WORK/failed" ERRORS="$WORK/errors" STOP="$WORK/stop"
: >"$ACKED"
: >"$FAILED"
LOAD_PID=
cleanup() {
  if [ -n "$LOAD_PID" ]; then
    touch "$STOP"
    kill "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

RUN="run-$(date -u +%Y%m%dT%H%M%SZ)-$$"
for i in $(seq 1 40); do
  if pg "$RW" -c "CREATE TABLE IF NOT EXISTS qs_load (id bigserial PRIMARY KEY, run text NOT NULL,
      at timestamptz NOT NULL DEFAULT now())" 2>"$ERRORS"; then
    break
  fi
  [ "$i" = 40 ] && { cat "$ERRORS" >&2; die "cannot reach the read-write listener $RW_HOST:$RW_PORT"; }
  sleep 0.5
done

# One INSERT per connection; the id is recorded only once the server acknowledged the
# commit (psql printed the RETURNING row and exited 0). Errors are retried.
load() {
  local id
  while ! [ -e "$STOP" ] && kill -0 $$ 2>/dev/null; do # until told, or this script is gone
    if id=$(pg "$RW" -c "INSERT INTO qs_load (run) VALUES ('$RUN') RETURNING id" 2>>"$ERRORS") \
      && [[ "$id" =~ ^[0-9]+$ ]]; then
      echo "$id" >>"$ACKED"
    else
      echo x >>"$FAILED"
      sleep 0.1
    fi
  done
}
acked() { wc -l <"$ACKED" | tr -d ' '; }
failed() { wc -l <"$FAILED" | tr -d ' '; }

wait_streaming
load &
LOAD_PID=$!
for _ in $(seq 1 100); do [ "$(acked)" -ge 20 ] && break; sleep 0.1; done
[ "$(acked)" -gt 0 ] || { tail -5 "$ERRORS" >&2; die "no write through the read-write listener succeeded"; }
step "write load running through the read-write listener $RW_HOST:$RW_PORT ($(acked) rows so far)"

# `failover LOC NAME WHAT`: planned failover to the instance at LOC, under load.
failover() {
  local loc=$1 name=$2 what=$3 t a0 f0
  wait_streaming
  sleep 1
  step "$what: set-primary at $loc ($name becomes primary)"
  a0=$(acked) f0=$(failed) t=$(now)
  fogctl sql instance-failover-group set-primary -g "$RG" -l "$loc" -n "$FOG" >/dev/null
  local took
  took=$(since "$t")
  sleep 1
  step "$what done in $took; $name is primary; $(($(acked) - a0)) writes acknowledged meanwhile ($(($(failed) - f0)) retried)"
  load_facts
  [ "$PRIMARY" = "$name" ] || die "$name should be primary, but $PRIMARY is"
}
ORIG_PRIMARY=$PRIMARY ORIG_PRIMARY_LOC=$PRIMARY_LOC
failover "$SECONDARY_LOC" "$SECONDARY" "failover"
failover "$ORIG_PRIMARY_LOC" "$ORIG_PRIMARY" "failback"

touch "$STOP"
wait "$LOAD_PID" || true
LOAD_PID=
N=$(acked)
step "write load stopped: $N rows acknowledged ($(failed) failed attempts retried)"

# --- verification ----------------------------------------------------------------------
sort -u "$ACKED" >"$WORK/acked.sorted"
# `missing CONNINFO`: how many acknowledged ids the server at CONNINFO lacks (-1: unreachable).
missing() {
  if ! pg "$1" -c "SELECT id FROM qs_load WHERE run = '$RUN'" >"$WORK/present" 2>>"$ERRORS"; then
    echo -1
    return
  fi
  sort -u "$WORK/present" | comm -23 "$WORK/acked.sorted" - >"$WORK/missing"
  wc -l <"$WORK/missing" | tr -d ' '
}
in_recovery() { pg "$1" -c "SELECT pg_is_in_recovery()" 2>>"$ERRORS" || echo "?"; }

m=-1
for _ in $(seq 1 20); do
  m=$(missing "$RW")
  [ "$m" -ge 0 ] && break
  sleep 0.5
done
[ "$(in_recovery "$RW")" = f ] || die "the read-write listener did not reach a primary"
if [ "$m" != 0 ]; then
  [ "$m" -gt 0 ] && echo "missing ids: $(head -20 "$WORK/missing" | tr '\n' ' ')" >&2
  tail -5 "$ERRORS" >&2
  die "ACKNOWLEDGED ROWS LOST on the primary $PRIMARY: $m of $N"
fi
step "primary $PRIMARY (read-write listener): all $N acknowledged rows present"

t=$(now) m=-1
for _ in $(seq 1 240); do
  if [ "$(in_recovery "$RO")" = t ]; then
    m=$(missing "$RO")
    [ "$m" = 0 ] && break
  fi
  sleep 0.25
done
if [ "$m" != 0 ]; then
  [ "$m" -gt 0 ] && echo "missing ids: $(head -20 "$WORK/missing" | tr '\n' ' ')" >&2
  tail -5 "$ERRORS" >&2
  [ "$m" -gt 0 ] || die "the read-only listener did not reach the secondary $SECONDARY within 60 s"
  die "ACKNOWLEDGED ROWS MISSING on the secondary $SECONDARY after 60 s: $m of $N"
fi
step "secondary $SECONDARY (read-only listener): all $N acknowledged rows present (caught up in $(since "$t"))"
echo "no acknowledged row lost: $N rows"

# --- how to go on ----------------------------------------------------------------------
API_URL=$(cat "$DATA/api-url")
PGPW="PGPASSWORD=\"\$(cat $PWFILE)\""
cat <<EOT

fogd is running: $API_URL (pid $(fogd_pid), log $DATA/fogd.log)
Failover group $FOG: $PRIMARY ($PRIMARY_LOC) is the primary, $SECONDARY ($SECONDARY_LOC) the secondary
  read-write listener  $RW_HOST:$RW_PORT  ($RW_NAME)
  read-only listener   $RO_HOST:$RO_PORT  ($RO_NAME)

Connect as fogadmin (the password is in $PWFILE):
  $PGPW psql "host=$RW_HOST port=$RW_PORT user=fogadmin dbname=$DB"   # primary
  $PGPW psql "host=$RO_HOST port=$RO_PORT user=fogadmin dbname=$DB"   # secondary

Explore with fogctl:
  export PATH="$(dirname "$FOGCTL_BIN"):\$PATH" FOGD_DATA_DIR=$DATA
  fogctl sql instance-failover-group watch
  fogctl sql instance-failover-group show -g $RG -l $PRIMARY_LOC -n $FOG -o table
  fogctl sql instance-failover-group set-primary -g $RG -l $SECONDARY_LOC -n $FOG

More in README.md (## Tour). Tear down: ${QS_ENV}./scripts/quickstart.sh --teardown
EOT

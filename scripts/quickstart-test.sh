#!/usr/bin/env bash
# End-to-end test of ./scripts/quickstart.sh: runs it twice in a row (debug build, a
# temporary data directory, a free port), checks that both runs succeed, say that no
# acknowledged row was lost and print the group's real listener addresses, then moves the
# primary to the other instance, runs `--teardown` and checks that fogd and every
# PostgreSQL server of that data directory are gone. On any failure it tears down all the
# same and shows fogd's log.
set -euo pipefail
cd "$(dirname "$0")/.."

# Only this test's settings reach the quickstart's fogd.
for v in $(compgen -e); do
  case "$v" in
    FOGD_PG_BIN_DIR | FOGD_PG_OS_USER) ;;
    FOGD_* | FOGCTL_*) unset "$v" ;;
  esac
done
export FOGD_BUILD_PROFILE=debug

work=$(mktemp -d /tmp/fogd-quickstart-test.XXXXXX)
chmod 755 "$work" # PostgreSQL runs as `postgres` when this runs as root
export FOGD_DATA_DIR="$work/data"
port=$(python3 -c '
import socket
for p in range(18443, 18643):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
')
[ -n "$port" ] || { echo "no free port in 18443-18642" >&2; exit 1; }
export FOGD_LISTEN="127.0.0.1:$port"
FOGCTL="$PWD/target/debug/fogctl"
[ -z "${CARGO_TARGET_DIR:-}" ] || FOGCTL="$CARGO_TARGET_DIR/debug/fogctl"

fail() {
  echo "quickstart-test: FAILED: $*" >&2
  exit 1
}

fogd_pid() { cat "$FOGD_DATA_DIR/fogd.pid" 2>/dev/null || true; }
# PIDs of live postmasters whose data directory is under this test's data directory.
postmasters() {
  local f pid
  for f in "$FOGD_DATA_DIR"/instances/*/pgdata/postmaster.pid; do
    [ -f "$f" ] || continue
    pid=$(head -1 "$f")
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  done
  # Also any process started with this data directory on its command line.
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    [ "$pid" != $$ ] || continue
    if { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -qF -- "-D $FOGD_DATA_DIR/"; then echo "$pid"; fi
  done
}

passed=false
cleanup() {
  local pid p
  if ! $passed; then
    echo "--- fogd log (last 40 lines)" >&2
    tail -40 "$FOGD_DATA_DIR/fogd.log" >&2 2>/dev/null || true
  fi
  pid=$(fogd_pid)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    ./scripts/quickstart.sh --teardown >/dev/null 2>&1 || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Servers a killed fogd would leave behind: only those of this data directory.
  for p in $(postmasters | sort -u); do kill -QUIT "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `run LOG ARGS…`: the quickstart with ARGS, its output shown and kept in LOG.
run() {
  local log=$1 t0=$SECONDS
  shift
  if ./scripts/quickstart.sh "$@" 2>&1 | tee "$log"; then
    echo "quickstart-test: quickstart.sh${*:+ $*} finished in $((SECONDS - t0)) s"
  else
    fail "quickstart.sh${*:+ $*} exited $? after $((SECONDS - t0)) s"
  fi
}

# `check_run LOG`: the no-loss line and the group's real listener addresses (spacing aside).
check_run() {
  local log=$1 expected line
  grep -Eq '^no acknowledged row lost: [1-9][0-9]* rows$' "$log" \
    || fail "$log: no 'no acknowledged row lost: N rows' line"
  expected=$("$FOGCTL" --data-dir "$FOGD_DATA_DIR" sql instance-failover-group show \
    -g quickstart -l eastus -n qs-fog | python3 -c '
import json, sys
l = json.load(sys.stdin)["properties"]["listeners"]
for kind, key in (("read-write", "readWrite"), ("read-only", "readOnly")):
    e = l[key]
    print("%s listener %s:%s (%s)" % (kind, e["host"], e["port"], e["hostName"]))
') || fail "cannot read the failover group from fogd"
  while IFS= read -r line; do
    tr -s ' ' <"$log" | grep -qF -- "$line" || fail "$log does not show the listener: '$line'"
  done <<<"$expected"
  grep -q 'the password is in .*/quickstart-password' "$log" || fail "$log does not say where the password is"
}

echo "quickstart-test: data $FOGD_DATA_DIR, API $FOGD_LISTEN"
start=$SECONDS
echo "== quickstart, first run"
run "$work/run1.log"
check_run "$work/run1.log"
pid1=$(fogd_pid)
[ "$(stat -c %a "$FOGD_DATA_DIR/quickstart-password")" = 600 ] || fail "the password file is not mode 0600"

echo "== quickstart, second run"
run "$work/run2.log"
check_run "$work/run2.log"
grep -q "^== fogd already running (pid $pid1" "$work/run2.log" || fail "the second run did not find fogd running"
for what in "managed instance qs-east (eastus): exists" "managed instance qs-west (westus): exists" \
  "database app: exists" "failover group qs-fog: exists"; do
  grep -qF "== $what" "$work/run2.log" || fail "the second run did not find '$what'"
done

# As after the README's tour: the group's primary is now the other instance.
echo "== set-primary at westus, then quickstart --teardown"
"$FOGCTL" --data-dir "$FOGD_DATA_DIR" sql instance-failover-group set-primary \
  -g quickstart -l westus -n qs-fog -o tsv </dev/null || fail "set-primary at westus failed"
pid=$(fogd_pid)
[ -n "$pid" ] || fail "no fogd pid file"
run "$work/teardown.log" --teardown
if kill -0 "$pid" 2>/dev/null; then fail "fogd (pid $pid) still runs after --teardown"; fi
left=$(postmasters | sort -u | tr '\n' ' ')
[ -z "$left" ] || fail "PostgreSQL servers of $FOGD_DATA_DIR still run after --teardown: $left"
grep -q "rm -rf $FOGD_DATA_DIR" "$work/teardown.log" || fail "--teardown does not say how to remove the data"

passed=true
echo "quickstart-test: passed in $((SECONDS - start)) s (two runs and a teardown)"

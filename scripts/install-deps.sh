#!/usr/bin/env bash
# Installs what fogd's build and tests need on Debian 12 and is a no-op when it is there:
# PostgreSQL 15 server binaries and psql, runuser (util-linux), python3-venv, curl, etcd 3.4
# (etcd-server: the etcd store's tests start their own servers) and protoc
# (protobuf-compiler: the etcd-client crate generates its gRPC code at build time), clang
# and libbpf-dev (fog-listener compiles its eBPF sockmap program at build time; without
# them it builds with the user-space data path only), pgbouncer (the listener benchmark).
set -euo pipefail
PG_BIN="${FOGD_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
need=()
if ! [ -x "$PG_BIN/initdb" ] || ! [ -x "$PG_BIN/pg_basebackup" ]; then
  need+=(postgresql-15 postgresql-client-15)
elif ! [ -x "$PG_BIN/psql" ]; then
  need+=(postgresql-client-15) # psql: the quickstart's client
fi
command -v curl >/dev/null || need+=(curl)
command -v runuser >/dev/null || need+=(util-linux)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
[ -x "${FOGD_ETCD_BIN:-/usr/bin/etcd}" ] || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v clang >/dev/null || need+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian's package starts a cluster on 5432; fogd runs its own servers.
  $sudo pg_ctlcluster 15 main stop 2>/dev/null || true
  # The benchmark runs its own PgBouncer.
  if [[ " ${need[*]} " == *" pgbouncer "* ]]; then
    $sudo systemctl disable --now pgbouncer >/dev/null 2>&1 || true
  fi
  # Nor does it need Debian's default etcd on 2379 (tests start theirs on free ports).
  if [[ " ${need[*]} " == *" etcd-server "* ]]; then
    $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "install-deps: running as root needs the unprivileged 'postgres' user (from the postgresql package)" >&2
  exit 1
fi

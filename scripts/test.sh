#!/usr/bin/env bash
# The test command: formatting, lints, every Rust test (unit and end-to-end against real
# PostgreSQL servers over HTTPS, including crash-injection tests), the quickstart end to end
# (twice, then its teardown), then Azure's own Python SDK and az CLI against a real fogd. Works on a
# fresh Debian 12 machine (installs what it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --all-features -- -D warnings

echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --profile ci
else
  cargo test --workspace --all-features
fi

echo "== quickstart end to end (scripts/quickstart-test.sh)"
./scripts/quickstart-test.sh

echo "== Azure SDK for Python against fogd"
./tests/sdk/setup_venv.sh
cargo build -q -p fogd --bin fogd
work=$(mktemp -d /tmp/fogd-sdk.XXXXXX)
chmod 755 "$work"
./target/debug/fogd serve --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/fogd.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 200); do [ -s "$work/data/api-url" ] && break; sleep 0.1; done
if ! [ -s "$work/data/api-url" ]; then cat "$work/fogd.log"; exit 1; fi
venv="${FOG_VENV:-$PWD/.venv}"
if "$venv/bin/python" tests/sdk/smoke_test.py \
    --base-url "$(cat "$work/data/api-url")" --ca "$work/data/ca.pem" \
    --token "$(cat "$work/data/admin-token")" --subscription "$(cat "$work/data/subscription-id")"; then
  echo "1 passed, 0 failed"
else
  echo "fogd log:"; tail -50 "$work/fogd.log"
  echo "0 passed, 1 failed"
  exit 1
fi

cleanup; trap - EXIT   # the SDK test's fogd is not needed any more

echo "== Azure CLI (az 2.91.0) against fogd (tests/az/run.sh)"
./tests/az/run.sh

echo "== reliability campaign, quick (bench/README.md, Campaign)"
# One release build gives both: the bench crate asks for fogd's `failpoints` feature, which
# the crash scenarios need. A failed trial makes the campaign exit 1, and this script with it.
cargo build --release -p fogd -p fog-bench
campaign_dir=$(mktemp -d /tmp/fogd-campaign.XXXXXX)
if ./target/release/campaign --quick --output "$campaign_dir/RELIABILITY.md"; then
  echo "campaign: every trial passed (report: $campaign_dir/RELIABILITY.md)"
else
  echo "campaign: some trials failed (report: $campaign_dir/RELIABILITY.md)"
  exit 1
fi

#!/usr/bin/env bash
# Create (or refresh) the Python virtualenv used by tests/sdk/smoke_test.py.
# Idempotent: re-running only re-checks the pinned requirements.
#   venv location: $FOG_VENV, else <repo root>/.venv
# Requires CPython >= 3.8 with the venv module; on Debian/Ubuntu the
# python3-venv package is installed with apt-get if ensurepip is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))"
venv="${FOG_VENV:-$repo_root/.venv}"
py="${PYTHON:-python3}"

if ! command -v "$py" >/dev/null 2>&1; then
    echo "setup_venv: $py not found; install python3 (e.g. apt-get install -y python3 python3-venv)" >&2
    exit 1
fi

need_venv_pkg() {
    ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1
}

install_venv_pkg() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup_venv: python venv/ensurepip missing and apt-get unavailable; install the venv module for $py" >&2
        exit 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    # Debian ships ensurepip in python3.X-venv; python3-venv depends on the right one.
    local ver pkgs="python3-venv"
    ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if apt-cache show "python${ver}-venv" >/dev/null 2>&1; then pkgs="$pkgs python${ver}-venv"; fi
    echo "setup_venv: installing $pkgs with apt-get" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    if need_venv_pkg; then install_venv_pkg; fi
    rm -rf "$venv"
    if ! "$py" -m venv "$venv"; then
        # e.g. "ensurepip is not available" on a minimal Debian image
        rm -rf "$venv"
        install_venv_pkg
        "$py" -m venv "$venv"
    fi
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" -c 'import azure.mgmt.sql, azure.core, azure.mgmt.core' \
    || { echo "setup_venv: SDK import failed in $venv" >&2; exit 1; }
echo "setup_venv: ready: $venv/bin/python"

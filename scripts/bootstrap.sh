#!/usr/bin/env bash
# Install what pgops needs on a fresh Debian 12 machine (run as root), idempotently:
# PostgreSQL 15 server and contrib from Debian, then a virtualenv in .venv with the
# pinned requirements and pgops itself (editable, for the `pgops` command).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's own interpreter by default: restore_command (`python -m pgops wal-fetch`) runs
# as the postgres OS user, which cannot execute an interpreter under /root (pyenv).
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
apt_needed=()
for pkg in postgresql-15 postgresql-contrib zstd; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || apt_needed+=("$pkg")
done
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_needed+=(python3-venv)
fi
if [ ${#apt_needed[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "[pgops] missing Debian packages: ${apt_needed[*]}; run as root or install them" >&2
        exit 1
    fi
    echo "[pgops] installing Debian packages: ${apt_needed[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_needed[@]}"
fi

# A virtualenv made from another interpreter (e.g. an earlier default) is rebuilt.
want_home=$("$PYTHON" -c 'import os, sys; print(os.path.dirname(os.path.realpath(sys.executable)))')
if [ -f .venv/pyvenv.cfg ] && ! grep -qx "home = $want_home" .venv/pyvenv.cfg; then
    echo "[pgops] .venv was built from another interpreter; rebuilding it from $PYTHON"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    echo "[pgops] creating virtualenv .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.pgops-requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[pgops] installing Python requirements into .venv (first run takes a few minutes)"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r requirements.txt
    .venv/bin/pip install -q --no-deps -e .
    echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# Install what pgops needs on a fresh Debian 12 machine (run as root), idempotently:
# PostgreSQL 15 server and contrib from Debian, then a virtualenv in .venv with the
# pinned requirements and pgops itself (editable, for the `pgops` command).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
apt_needed=()
for pkg in postgresql-15 postgresql-contrib; do
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

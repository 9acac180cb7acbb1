#!/usr/bin/env bash
# Set up a fresh machine: redis-server (system package) and a virtualenv with pxexec
# and its test extras in .venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup: redis-server not found; installing it with the system package manager"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
  else
    echo "setup: no apt-get here; install redis-server yourself" >&2
    exit 1
  fi
fi

# The multi-host tests (pxexec.testbed) need ip/tc (iproute2) and unshare/nsenter
# (util-linux); as root, install what is missing (else those tests skip, saying why).
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
  command -v tc >/dev/null 2>&1 || missing="$missing iproute2"
  command -v nsenter >/dev/null 2>&1 || missing="$missing util-linux"
  if [ -n "$missing" ]; then
    echo "setup: installing$missing for the multi-host test bed"
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null || \
      echo "setup: could not install$missing; the multi-host tests will skip" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e '.[test]'; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup: pip install failed (log above)" >&2
  exit 1
fi
rm -f "$log"
.venv/bin/python -c "import pxexec, redis, numpy, dask, distributed, parsl" 
echo "setup: ready (.venv, redis-server $(redis-server --version | awk '{print $3}'))"

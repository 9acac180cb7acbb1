#!/usr/bin/env bash
# The main job on a fresh machine: set up, then `pxexec bench` on the embedded default
# (a local Dask cluster, the shared-memory connector: no server needed).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
echo "main: setting up .venv with pxexec and its extras, and redis-server if missing"
echo "main: (a few minutes on a fresh machine, seconds when already done)"
bash scripts/setup.sh
echo "main: set-up done in $(( $(date +%s) - started )) s; running: pxexec bench $*"
echo "main: (about 2 minutes; progress below; records, summary and plot go to --out, default bench-out/)"
exec .venv/bin/pxexec bench "$@"

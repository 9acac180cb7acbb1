#!/usr/bin/env bash
# The main job on a fresh machine: set up, then `pxexec bench` on the embedded default
# (a local Dask cluster, the shared-memory connector: no server needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pxexec bench "$@"

#!/usr/bin/env bash
# The main job on a fresh machine: set up, then run the demo on the embedded default
# (shared memory, no server needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/quickstart.py "$@"

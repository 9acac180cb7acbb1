#!/usr/bin/env bash
# Bring the simulated multi-host test bed up or down by hand (needs root).
#   bash scripts/testbed.sh up --hosts 3 [--rate 10gbit]   # hosts n1..n3; prints addresses
#   bash scripts/testbed.sh exec n1 -- hostname            # run a command on a host
#   bash scripts/testbed.sh down                           # kill everything, remove the bed
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pxexec.testbed "$@"

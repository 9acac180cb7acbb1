#!/usr/bin/env bash
# The TaPS-style suite of `pxexec bench` on a Dask LocalCluster with 2 worker processes:
# plain Dask vs pxexec on shm vs pxexec on Redis vs the ProxyStore library, every workload.
# Output: docs/benchmarks/suite/ (tables, CSV records, PNG plots). About 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/benchmarks/suite}
mkdir -p "$OUT"
ARMS=(--engine dask --connector shm --connector redis --arm proxystore --out "$OUT")
filter() { grep -v -E "distributed\.|INFO|warn|Consider|or using|See also|This may|^\s*$" || true; }
run() { name=$1; shift; .venv/bin/pxexec bench "$@" "${ARMS[@]}" 2>&1 | filter | tee "$OUT/$name.txt"; }
run cholesky cholesky --reps 3
run fedlearn fedlearn --reps 3
run moldesign moldesign --reps 3
run roundtrip roundtrip --sizes 10kB,100kB,1MB,10MB,100MB --reps 5
run throughput throughput --workers 1,2 --tasks 1000 --size 1MB

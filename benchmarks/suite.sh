#!/usr/bin/env bash
# The TaPS-style suite of `pxexec bench` on a Dask LocalCluster with 2 worker processes:
# plain Dask vs pxexec on shm vs pxexec on Redis vs the ProxyStore library, every workload.
# Output: docs/benchmarks/suite/ (tables, CSV records, PNG plots). About 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PXEXEC="${PXEXEC:-.venv/bin/pxexec}"
OUT=${OUT:-docs/benchmarks/suite}
mkdir -p "$OUT"
ARMS=(--engine dask --connector shm --connector redis --arm proxystore --out "$OUT")
filter() { grep -v -E "distributed\.|INFO|warn|Consider|or using|See also|This may|^\s*$" || true; }
# stable file names: <name>.txt, <name>.csv, <name>-summary.csv, <name>.png
settle() {
  name=$1; pattern=$2
  for f in "$OUT"/$pattern-20*; do
    case "$f" in
      *-summary.csv) mv "$f" "$OUT/$name-summary.csv" ;;
      *.csv) mv "$f" "$OUT/$name.csv" ;;
      *.png) mv "$f" "$OUT/$name.png" ;;
    esac
  done
}
run() {
  name=$1; shift
  "$PXEXEC" bench "$@" "${ARMS[@]}" 2>&1 | filter | tee "$OUT/$name.txt"
  settle "$name" "$1-dask"
}
run cholesky cholesky --reps 3
run fedlearn fedlearn --reps 3
run moldesign moldesign --reps 3
run roundtrip roundtrip --sizes 10kB,100kB,1MB,10MB,100MB --reps 5
# 1 kB and 1 MB tasks take turns in one run: #3 compares pxexec at 1 MB with plain at 1 kB
run throughput throughput --workers 1,2 --tasks 1000 --size 1kB,1MB
# How close each Cholesky arm came to what its own tasks' compute allows (and the most
# any data path could gain over plain Dask with these tasks).
"${PYTHON:-.venv/bin/python}" benchmarks/cholesky_bound.py "$OUT/cholesky.csv" | tee "$OUT/cholesky-bound.txt"

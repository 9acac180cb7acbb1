#!/usr/bin/env bash
# Every figure quoted in the issue notes, one after another (about 15 minutes on 2 cores).
# Output: bench-out/all/*.txt (and the CSV files of `pxexec bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-bench-out/all}
mkdir -p "$OUT"
filter() { grep -v -E "distributed\.|INFO|warn|Consider|or using|See also|This may|^\s*$" || true; }
$PY benchmarks/foundation.py 2>&1 | filter | tee "$OUT/foundation.txt"
$PY benchmarks/overhead.py 2>&1 | filter | tee "$OUT/overhead.txt"
.venv/bin/pxexec bench roundtrip --engine dask --connector shm --connector redis \
  --sizes 10kB,100kB,1MB,10MB,100MB --reps 7 --out "$OUT" 2>&1 | filter | tee "$OUT/roundtrip-dask.txt"
.venv/bin/pxexec bench roundtrip --engine process --connector shm --connector redis \
  --sizes 10kB,100kB,1MB,10MB,100MB --reps 7 --out "$OUT" 2>&1 | filter | tee "$OUT/roundtrip-process.txt"
.venv/bin/pxexec bench throughput --engine dask --workers 1,2 --tasks 1000 --size 1kB,1MB \
  --connector shm --connector redis --out "$OUT" 2>&1 | filter | tee "$OUT/throughput.txt"
$PY benchmarks/ownership.py --rounds 7 2>&1 | filter | tee "$OUT/ownership.txt"
$PY benchmarks/routing.py 2>&1 | filter | tee "$OUT/routing.txt"
$PY benchmarks/integrity.py 2>&1 | filter | tee "$OUT/integrity.txt"

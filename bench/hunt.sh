#!/usr/bin/env bash
# Hunting benchmark: ingest of a synthetic fleet into the store, then Rampart's KQL against
# DuckDB's SQL over the same Parquet files (crates/rampart/benches/hunt.rs says what is
# measured). Needs python3 with duckdb (installed with pip when missing).
#
#   bench/hunt.sh                                   # 10 M process events, 3 runs per query
#   RAMPART_BENCH_ROWS=1000000 bench/hunt.sh        # a quicker run
#   RAMPART_BENCH_RUNS=5 RAMPART_BENCH_DIR=/tmp/hunt-store bench/hunt.sh   # keep the store, reuse it next time
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rampart/target}"

command -v python3 >/dev/null || { echo "python3 is needed (DuckDB's side runs in it)" >&2; exit 1; }
if ! python3 -c 'import duckdb' 2>/dev/null; then
  echo "installing duckdb for python3" >&2
  python3 -m pip install --quiet duckdb
fi

exec cargo bench -p rampart --bench hunt

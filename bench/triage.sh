#!/usr/bin/env bash
# Triage throughput benchmark: whole-process runs of the release binary over the EVTX attack
# samples with SigmaHQ's rules (median of N runs), then steady-state records/s over the same
# folder repeated 50 times (symlinks, so no copy). Prints one line per measurement.
#
#   bench/triage.sh            # uses ../shared (or $RAMPART_DATA_DIR)
#   RUNS=5 REPEAT=100 bench/triage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${RAMPART_DATA_DIR:-../shared}"
SAMPLES="$DATA/datasets/evtx-attack-samples"
RULES="${RULES:-$DATA/rules/sigma}"
RUNS="${RUNS:-3}"
REPEAT="${REPEAT:-50}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rampart/target}"
[ -d "$SAMPLES" ] || { echo "no samples at $SAMPLES (set RAMPART_DATA_DIR)" >&2; exit 1; }

cargo build --release -p rampart >&2
BIN="$CARGO_TARGET_DIR/release/rampart"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

run() { # run LABEL INPUT -> prints seconds, peak MiB, and the summary figures
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN" triage -q --rules "$RULES" --format jsonl \
    -o "$WORK/out.jsonl" --summary-json "$WORK/summary.json" "$2" 2>/dev/null || true
  read -r secs kib < "$WORK/time"
  python3 - "$1" "$secs" "$kib" "$WORK/summary.json" <<'PY'
import json, sys
label, secs, kib, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = json.load(open(path))
print(f"{label}: {secs:.3f} s wall, {kib/1024:.0f} MiB peak, {s['files']} files, {s['bytes']/1e6:.1f} MB, "
      f"{s['records_read']} records ({s['records_read']/secs:,.0f} records/s), rules {s['rules_active']} active / "
      f"{s['rules_inactive']} inactive / {s['rules_failed']} failed (loaded in {s['rules_load_seconds']:.2f} s), "
      f"{s['detections']} detections, {s['files_with_detections']} files with detections, "
      f"{s['distinct_file_rule_pairs']} distinct (file, rule) pairs, set aside {s['records_set_aside']}, "
      f"rows {sum(s['rows_per_table'].values())}")
PY
}

for i in $(seq "$RUNS"); do run "attack-samples run $i" "$SAMPLES"; done | tee "$WORK/runs"
python3 - "$WORK/runs" <<'PY'
import re, statistics, sys
secs = [float(re.search(r": ([0-9.]+) s wall", l).group(1)) for l in open(sys.argv[1])]
mib = [int(re.search(r", ([0-9]+) MiB peak", l).group(1)) for l in open(sys.argv[1])]
print(f"attack-samples median: {statistics.median(secs):.3f} s wall, {statistics.median(mib)} MiB peak")
PY

mkdir -p "$WORK/big"
for i in $(seq "$REPEAT"); do ln -s "$(realpath "$SAMPLES")" "$WORK/big/copy$i"; done
run "steady state (samples x$REPEAT)" "$WORK/big"

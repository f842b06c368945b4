#!/usr/bin/env bash
# Server ingest benchmark: `rampart server` (release, plain HTTP, SigmaHQ's Windows rules) on a
# fresh data directory, then concurrent clients posting batches of forwarded Windows events
# (the EVTX attack samples' records as JSON lines, replayed) to /api/v1/ingest/events for a
# fixed time. Prints one JSON summary line: events/s, events per server CPU second ("per
# core"), p50/p99 acknowledgement latency, and the server's RSS sampled every second.
#
#   bench/server.sh                          # 60 s, 4 clients, batches of 1,000, zstd
#   SECONDS_=600 bench/server.sh             # the 10-minute run
#   CLIENTS=8 BATCH=5000 ENCODING=gzip bench/server.sh
#   ORIGINAL_TIMES=1 bench/server.sh         # replay the records at their recorded times
#   REPEAT_RECORDS=1 bench/server.sh         # send each record unchanged every time (no new ids, times)
#   RAMPART_BIN=/tmp/old/rampart bench/server.sh   # another build (e.g. before a change), no build
#   CONFIG=server.toml bench/server.sh       # the server with a configuration file
#   PERF=1 bench/server.sh                   # also `perf record` the server (perf.data in $PWD)
#   PERF=1 PERF_FREQ=97 bench/server.sh      # fewer samples: a DWARF report of 30 s stays quick
#   CALLGRIND=1 bench/server.sh              # the server under callgrind, REQUESTS=30 batches:
#                                            # its instructions per event, which a noisy machine
#                                            # does not move (a second JSON line; slow: minutes).
#                                            # WARMUP=30 batches go first, not counted: by then
#                                            # the samples' alerts are raised and detections are
#                                            # repeats, as on a server that has run a while
#   CALLGRIND=1 CALLGRIND_OUT=cg.out bench/server.sh   # and keep the dump (callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${RAMPART_DATA_DIR:-../shared}"
SAMPLES="$DATA/datasets/evtx-attack-samples"
RULES="${RULES:-$DATA/rules/sigma/rules/windows}"
DURATION="${SECONDS_:-60}"
CLIENTS="${CLIENTS:-4}"
BATCH="${BATCH:-1000}"
ENCODING="${ENCODING:-zstd}"
TIMES=()
CONFIG_ARGS=()
[ -n "${CONFIG:-}" ] && CONFIG_ARGS=(--config "$(realpath "$CONFIG")")
[ -n "${ORIGINAL_TIMES:-}" ] && TIMES=(--original-times)
[ -n "${REPEAT_RECORDS:-}" ] && TIMES+=(--repeat-records)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rampart/target}"
[ -d "$SAMPLES" ] || { echo "no samples at $SAMPLES (set RAMPART_DATA_DIR)" >&2; exit 1; }

LOAD="$CARGO_TARGET_DIR/release/examples/server_load"
if [ -n "${RAMPART_BIN:-}" ]; then
  BIN="$RAMPART_BIN"
  [ -x "$LOAD" ] || cargo build --release -p rampart --example server_load >&2
else
  cargo build --release -p rampart --bin rampart --example server_load >&2
  BIN="$CARGO_TARGET_DIR/release/rampart"
fi
WORK="$(mktemp -d)"
PASSWORD="bench-$$-$RANDOM"
SERVER_PID=""
PERF_PID=""
cleanup() {
  if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Under callgrind the server is instrumented only while the load runs (not its start-up).
WRAP=()
LOAD_ARGS=()
if [ -n "${CALLGRIND:-}" ]; then
  command -v valgrind >/dev/null || { echo "CALLGRIND=1 needs valgrind" >&2; exit 1; }
  WRAP=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out")
  WARMUP="${WARMUP:-30}"
  LOAD_ARGS=(--requests "${REQUESTS:-30}" --skip "$WARMUP" --token-file "$WORK/token")
  DURATION="${SECONDS_:-3600}"
fi
RAMPART_ADMIN_PASSWORD="$PASSWORD" RAMPART_LOG=warn "${WRAP[@]}" "$BIN" server --data-dir "$WORK/data" \
  --listen 127.0.0.1:0 --insecure-http --rules "$RULES" "${CONFIG_ARGS[@]}" >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
for _ in $(seq 3000); do
  URL="$(sed -n 's/^Rampart server listening on //p' "$WORK/stdout" | head -1)"
  [ -n "$URL" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/stderr" >&2; exit 1; }
  sleep 0.2
done
[ -n "$URL" ] || { echo "the server did not start" >&2; exit 1; }
if [ -n "${PERF:-}" ]; then
  perf record -F "${PERF_FREQ:-499}" -g --call-graph dwarf,16384 -o perf.data -p "$SERVER_PID" >/dev/null 2>&1 &
  PERF_PID=$!
fi
if [ -n "${CALLGRIND:-}" ]; then
  if [ "$WARMUP" -gt 0 ]; then
    echo "warm-up: $WARMUP batches, not counted" >&2
    "$LOAD" --url "$URL" --password "$PASSWORD" --pid "$SERVER_PID" --samples "$SAMPLES" \
      --clients "$CLIENTS" --batch "$BATCH" --seconds "$DURATION" --encoding "$ENCODING" "${TIMES[@]}" \
      --requests "$WARMUP" --token-file "$WORK/token" >/dev/null
  fi
  callgrind_control -i on "$SERVER_PID" >/dev/null
fi
echo "server pid $SERVER_PID at $URL, RSS after start: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$SERVER_PID/status)" >&2

"$LOAD" --url "$URL" --password "$PASSWORD" --pid "$SERVER_PID" --samples "$SAMPLES" \
  --clients "$CLIENTS" --batch "$BATCH" --seconds "$DURATION" --encoding "$ENCODING" "${TIMES[@]}" \
  "${LOAD_ARGS[@]}" | tee "$WORK/summary.json"
if [ -n "${CALLGRIND:-}" ]; then
  # The load's instructions, every thread's (the dump at exit, the shutdown's, is left out).
  callgrind_control -d "$SERVER_PID" >/dev/null
  [ -n "${CALLGRIND_OUT:-}" ] && cp "$WORK"/callgrind.out.* "$CALLGRIND_OUT"
  python3 - "$WORK" <<'PY'
import glob, json, sys
work = sys.argv[1]
events = json.load(open(f"{work}/summary.json"))["events"]
ir = sum(int(line.split()[1]) for f in glob.glob(f"{work}/callgrind.out.*")
         for line in open(f) if line.startswith("totals:"))
print(json.dumps({"callgrind_instructions": ir, "events": events,
                  "instructions_per_event": round(ir / max(events, 1))}))
PY
fi

#!/usr/bin/env bash
# Agent benchmark (issue 5's overhead and no-loss figures): a `rampart server` on a fresh data
# directory, `rampart-agent` (release) enrolled against it, then `rampart-agent loadgen` at
# 1,000 execs/s + 10,000 file operations/s + 100 connections/s for 60 s. Reports, as one JSON
# line: what was generated and what hunting holds (per kind) and how long after the load's end
# it held all of it (polled every second: the agent's sending and the server's ingest), the
# drops the agent reported,
# the agent's CPU (user + system from /proc, from the load's start until hunting holds all it
# made: in seconds, as a share of one core over the load's duration — what that rate of
# events costs, the drain after it included — and per generated event) with the exec rate the
# generator reached (this machine's varies: 500–1,000 a second), peak RSS, and the
# latency from an exec to its row in hunting (p50/p95 of 40 probes).
#
#   bench/agent.sh                               # the issue's rates
#   SECONDS_=10 EXECS=200 FILE_OPS=2000 bench/agent.sh
#   SERVER_PROFILE=release bench/agent.sh        # the server built in release too (slow build)
#   AGENT=/tmp/old-agent SERVER=target/debug/rampart bench/agent.sh   # given binaries, no build
#   AGENT_LOG=/tmp/agent.log bench/agent.sh      # keep the agent's log (it is removed with the run)
# Needs root (eBPF).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${SECONDS_:-60}"
EXECS="${EXECS:-1000}"
FILE_OPS="${FILE_OPS:-10000}"
CONNS="${CONNS:-100}"
SERVER_PROFILE="${SERVER_PROFILE:-debug}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rampart/target}"
. scripts/system-packages

# AGENT=PATH / SERVER=PATH run given binaries instead of building them (to compare builds).
if [ -z "${AGENT:-}" ]; then
  cargo build --release -p rampart-agent >&2
  AGENT="$CARGO_TARGET_DIR/release/rampart-agent"
fi
if [ -z "${SERVER:-}" ]; then
  if [ "$SERVER_PROFILE" = release ]; then cargo build --release -p rampart >&2; else cargo build -p rampart >&2; fi
  SERVER="$CARGO_TARGET_DIR/$SERVER_PROFILE/rampart"
fi
WORK="$(mktemp -d)"
PASSWORD="bench-$$-$RANDOM"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

RAMPART_ADMIN_PASSWORD="$PASSWORD" RAMPART_LOG=warn "$SERVER" server --data-dir "$WORK/data" \
  --listen 127.0.0.1:0 >"$WORK/stdout" 2>"$WORK/stderr" &
PIDS+=($!)
URL=""
for _ in $(seq 600); do
  URL="$(sed -n 's/^Rampart server listening on //p' "$WORK/stdout" | head -1)"
  [ -n "$URL" ] && break
  sleep 0.2
done
[ -n "$URL" ] || { cat "$WORK/stderr" >&2; echo "the server did not start" >&2; exit 1; }
URL="${URL%/}"
CA="$WORK/data/pki/ca.crt"
api() { curl -sf --cacert "$CA" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
TOKEN=$(curl -sf --cacert "$CA" "$URL/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" | jq -r .token)
ENROLL=$(api "$URL/api/v1/enrollment-tokens" -d '{"name":"bench"}' | jq -r .token)
"$AGENT" enroll --server "$URL" --token "$ENROLL" --state-dir "$WORK/agent" --hostname bench-host >&2
RAMPART_LOG=warn "$AGENT" run --state-dir "$WORK/agent" --heartbeat-secs 2 --no-logons 2>"${AGENT_LOG:-$WORK/agent.log}" &
AGENT_PID=$!
PIDS+=($AGENT_PID)
count() {
  api "$URL/api/v1/hunting/query" -d "$(jq -nc --arg q "$1 | count" '{query: $q}')" | jq '.rows[0][0] // 0'
}
until [ "$(count "DeviceInfo | where DeviceName == 'bench-host'")" -gt 0 ]; do sleep 0.5; done
# Steady state before measuring: the start-up software inventory is in, and the generator's
# binary (the agent's own: ~54 MB with debug info) has been hashed, as every binary is once per
# file version (a few tenths of a second of CPU for this one: coreutils' sha1sum, sha256sum
# and md5sum of it take 0.42 s).
until [ "$(count "DeviceTvmSoftwareInventory | where DeviceName == 'bench-host'")" -gt 0 ]; do sleep 0.5; done
"$AGENT" --version >/dev/null
until [ "$(count "DeviceProcessEvents | where DeviceName == 'bench-host' and ProcessCommandLine endswith ' --version' and FolderPath == '$(realpath "$AGENT")'")" -gt 0 ]; do sleep 0.5; done

cpu() { awk '{print $14 + $15}' "/proc/$AGENT_PID/stat"; }
TICKS=$(getconf CLK_TCK)
CPU0=$(cpu)
"$AGENT" loadgen --execs-per-sec "$EXECS" --file-ops-per-sec "$FILE_OPS" --connections-per-sec "$CONNS" \
  --seconds "$DURATION" --marker "bench-$$" --dir "$WORK" >"$WORK/generated.json"
LOAD_END=$(date +%s.%N)
# The agent's CPU includes draining what the load queued: wait until hunting holds it all.
G="$WORK/generated.json"
want() { jq -r ".$1" "$G"; }
DIR=$(want file_dir); PORT=$(want port)
Q_EXEC="DeviceProcessEvents | where DeviceName == 'bench-host' and ProcessCommandLine == '/bin/true bench-$$'"
Q_CREATED="DeviceFileEvents | where DeviceName == 'bench-host' and FolderPath startswith '$DIR' and ActionType == 'FileCreated'"
Q_DELETED="DeviceFileEvents | where DeviceName == 'bench-host' and FolderPath startswith '$DIR' and ActionType == 'FileDeleted'"
# The generator connects with a timeout (a non-blocking connect): one that was still in
# progress when connect() returned is a ConnectionAttempt row, not a ConnectionSuccess.
Q_CONN="DeviceNetworkEvents | where DeviceName == 'bench-host' and RemotePort == $PORT and ActionType in ('ConnectionSuccess', 'ConnectionAttempt')"
for _ in $(seq 600); do
  [ "$(count "$Q_EXEC")" -ge "$(want execs)" ] && [ "$(count "$Q_DELETED")" -ge "$(want files_deleted)" ] && break
  sleep 1
done
CPU1=$(cpu); DRAINED=$(date +%s.%N)
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$AGENT_PID/status")
# Of the resident memory: the agent's own heap and stacks vs. mapped shared pages (the eBPF
# ring buffer is mapped from the kernel and counts in RSS once touched).
ANON=$(awk '/RssAnon/ {print $2}' "/proc/$AGENT_PID/status")

# Latency: an exec, then poll hunting until its row is there.
LAT=()
for i in $(seq 40); do
  S=$(date +%s%N); /bin/true "probe-$$-$i"
  until [ "$(count "DeviceProcessEvents | where ProcessCommandLine == '/bin/true probe-$$-$i'")" -gt 0 ]; do sleep 0.02; done
  LAT+=($(( ($(date +%s%N) - S) / 1000000 )))
done
sleep 3
DEVICE=$(api "$URL/api/v1/devices?hostname=bench-host" | jq '.items[0]')
jq -nc --argjson g "$(cat "$G")" --argjson device "$DEVICE" \
  --arg execs "$(count "$Q_EXEC")" --arg created "$(count "$Q_CREATED")" \
  --arg deleted "$(count "$Q_DELETED")" --arg conns "$(count "$Q_CONN")" \
  --arg cpu_s "$(echo "($CPU1 - $CPU0) / $TICKS" | bc -l)" \
  --arg drain "$(echo "$DRAINED - $LOAD_END" | bc -l)" \
  --arg hwm "$HWM" --arg anon "$ANON" --arg lat "$(printf '%s\n' "${LAT[@]}" | sort -n | tr '\n' ' ')" '
  ($lat | split(" ") | map(select(. != "") | tonumber)) as $l |
  {generated: {execs: $g.execs, files_created: $g.files_created, files_deleted: $g.files_deleted, connections: $g.connections, seconds: $g.seconds},
   in_hunting: {execs: ($execs|tonumber), files_created: ($created|tonumber), files_deleted: ($deleted|tonumber), connections: ($conns|tonumber)},
   agent_reported_dropped: $device.events_dropped,
   in_hunting_after_load_s: ($drain|tonumber*10|round/10),
   execs_per_sec: ($g.execs / $g.seconds | round),
   agent_cpu_s: ($cpu_s|tonumber),
   agent_cpu_percent_of_a_core: (($cpu_s|tonumber) / $g.seconds * 100 * 100 | round / 100),
   agent_cpu_us_per_event: (($cpu_s|tonumber) * 1e6 / ([$g.execs, $g.files_created, $g.files_deleted, $g.connections] | add) * 100 | round / 100),
   agent_peak_rss_mib: ($hwm|tonumber/1024*10|round/10),
   agent_rss_anon_mib: ($anon|tonumber/1024*10|round/10),
   exec_to_hunting_ms: {p50: $l[($l|length)/2|floor], p95: $l[($l|length)*0.95|floor], max: $l[-1]}}'

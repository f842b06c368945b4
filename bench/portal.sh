#!/usr/bin/env bash
# Portal benchmark (issue 6: every page server-rendered in under 100 ms on the embedded store
# with the evtx-attack-samples data). Starts `rampart server` on a fresh data directory with
# SigmaHQ's Windows rules, uploads the samples, signs in through the form, then fetches each
# kind of page RUNS times (the first incident, alert and rule of the queues, the device with the
# most events) and prints,
# per page, the server's time to the last byte: median, p95 and max in ms, as a table and as
# one JSON line.
#
#   bench/portal.sh                      # debug server (what the tests build)
#   PROFILE=release bench/portal.sh      # release server (slow build)
#   RUNS=50 bench/portal.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-20}"
PROFILE="${PROFILE:-debug}"
DATA="${RAMPART_DATA_DIR:-../shared}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rampart/target}"
. scripts/system-packages

if [ "$PROFILE" = release ]; then cargo build --release -p rampart >&2; else cargo build -p rampart >&2; fi
SERVER="$CARGO_TARGET_DIR/$PROFILE/rampart"
WORK="$(mktemp -d)"
PASSWORD="bench-$$-$RANDOM"
PID=""
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

RAMPART_ADMIN_PASSWORD="$PASSWORD" RAMPART_LOG=warn "$SERVER" server --data-dir "$WORK/data" \
  --listen 127.0.0.1:0 --insecure-http --rules "$DATA/rules/sigma/rules/windows" \
  >"$WORK/stdout" 2>"$WORK/stderr" &
PID=$!
URL=""
for _ in $(seq 600); do
  URL="$(sed -n 's/^Rampart server listening on //p' "$WORK/stdout" | head -1)"
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { cat "$WORK/stderr" >&2; exit 1; }
URL="${URL%/}"
TOKEN="$(curl -sf "$URL/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
"$SERVER" ingest --server "$URL" --token "$TOKEN" --format json "$DATA/datasets/evtx-attack-samples" >/dev/null 2>&1

URL="$URL" TOKEN="$TOKEN" PASSWORD="$PASSWORD" RUNS="$RUNS" PROFILE="$PROFILE" python3 - <<'EOF'
import http.cookiejar, json, os, re, statistics, time, urllib.parse, urllib.request

url, token, runs = os.environ["URL"], os.environ["TOKEN"], int(os.environ["RUNS"])

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

jar = http.cookiejar.CookieJar()
browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

def fetch(path, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    start = time.perf_counter()
    try:
        with browser.open(url + path, data=data) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    return status, body.decode(), (time.perf_counter() - start) * 1000

def api(path):
    req = urllib.request.Request(url + path, headers={"Authorization": "Bearer " + token})
    return json.load(urllib.request.urlopen(req))

_, page, _ = fetch("/")
csrf = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
status, _, _ = fetch("/login", {"_csrf": csrf, "username": "admin", "password": os.environ["PASSWORD"], "next": "/incidents"})
assert status == 303, f"sign-in: {status}"

first = lambda path: (api(path)["items"] or [{}])[0].get("id")
def busiest_device():
    # The device with the most events: its timeline and tree are the slowest to build.
    req = urllib.request.Request(url + "/api/v1/hunting/query", method="POST",
        data=json.dumps({"query": "union DeviceProcessEvents, DeviceNetworkEvents, DeviceFileEvents, DeviceRegistryEvents, DeviceLogonEvents, DeviceImageLoadEvents, DeviceEvents | summarize n = count() by DeviceName | top 1 by n", "history": False}).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    name = json.load(urllib.request.urlopen(req))["rows"][0][0]
    return next(d["id"] for d in api("/api/v1/devices?limit=1000")["items"] if d["hostname"] == name)
incident, alert, device, rule = first("/api/v1/incidents?limit=1"), first("/api/v1/alerts?limit=1"), busiest_device(), first("/api/v1/rules?limit=1")
pages = ["/incidents", f"/incidents/{incident}", "/alerts", f"/alerts/{alert}", "/devices",
         f"/devices/{device}", f"/devices/{device}/timeline", f"/devices/{device}/tree",
         "/hunting", "/actions", "/indicators", "/rules", f"/rules/{rule}", "/settings"]
results = {}
for path in pages:
    times = []
    for _ in range(runs):
        status, _, ms = fetch(path)
        assert status == 200, f"{path}: {status}"
        times.append(ms)
    times.sort()
    results[path] = {"median_ms": round(statistics.median(times), 1),
                     "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
                     "max_ms": round(times[-1], 1)}
# A hunting query through the form (rendering 100 rows and a chart).
_, page, _ = fetch("/hunting")
csrf = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
times = []
for _ in range(runs):
    status, _, ms = fetch("/hunting", {"_csrf": csrf, "query": "DeviceProcessEvents | summarize count() by bin(Timestamp, 1d) | render timechart"})
    assert status == 200, f"hunting: {status}"
    times.append(ms)
times.sort()
results["POST /hunting (timechart)"] = {"median_ms": round(statistics.median(times), 1), "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1), "max_ms": round(times[-1], 1)}

width = max(len(p) for p in results)
print(f"{'page':<{width}}  median    p95     max   (ms, {runs} runs, {os.environ['PROFILE']} server)")
for path, r in results.items():
    shown = re.sub(r"/(inc|alr|dev|rul)_[0-9A-Za-z]+", r"/{\1}", path)
    print(f"{shown:<{width}}  {r['median_ms']:6.1f} {r['p95_ms']:6.1f} {r['max_ms']:7.1f}")
print(json.dumps({"runs": runs, "profile": os.environ["PROFILE"], "pages": results}))
EOF

#!/usr/bin/env bash
# Makes the seed corpora fuzz/corpus/<target>/ from the shared data beside the repository
# (../shared, or $RAMPART_DATA_DIR). The corpora are never committed (.gitignore has
# /fuzz/corpus); run this again on a fresh clone. Needs bash, coreutils, find and python3.
set -euo pipefail
cd "$(dirname "$0")"
DATA="${RAMPART_DATA_DIR:-../../shared}"
for dataset in datasets/evtx-attack-samples datasets/sigma-regression rules/sigma kql/defender-hunting-queries; do
    [ -d "$DATA/$dataset" ] || { echo "missing $DATA/$dataset (set RAMPART_DATA_DIR)" >&2; exit 1; }
done

EVTX=corpus/evtx_mapper
RULES=corpus/rule_loader
KQL=corpus/kql_parser
LINES=corpus/forwarded_lines
mkdir -p "$EVTX" "$RULES" "$KQL" "$LINES"

# EVTX seeds. A chunk is 64 KiB after a 4 KiB file header: every attack sample cut to its first
# chunk (69632 bytes), the ones with more used chunks also to their first two (135168 bytes),
# and the single-chunk SigmaHQ regression logs as they are.
i=0
while IFS= read -r -d '' f; do
    i=$((i + 1))
    head -c 69632 "$f" > "$EVTX/attack-$i-1chunk.evtx"
    # A second chunk that is in use starts with its magic at 69632.
    if [ "$(head -c 69640 "$f" | tail -c 8 | tr -d '\0')" = "ElfChnk" ]; then
        head -c 135168 "$f" > "$EVTX/attack-$i-2chunks.evtx"
    fi
done < <(find "$DATA/datasets/evtx-attack-samples" -iname '*.evtx' -print0 | sort -z)
find "$DATA/datasets/sigma-regression" -name '*.evtx' -exec cp {} "$EVTX/" \;

# JSON seeds (the target's second mode): the regression records as `evtx` renders them
# (`#attributes`), and the same records in the separated-attributes form `read_file` uses.
python3 - "$DATA/datasets/sigma-regression" "$EVTX" "$LINES" <<'PY'
import json, pathlib, sys

def separate(value):
    if isinstance(value, list):
        return [separate(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, child in value.items():
        if isinstance(child, dict) and "#attributes" in child:
            out[key + "_attributes"] = child["#attributes"]
            rest = {k: v for k, v in child.items() if k != "#attributes"}
            if list(rest) == ["#text"]:
                out[key] = rest["#text"]
            elif rest:
                out[key] = separate(rest)
        else:
            out[key] = separate(child)
    return out

source, target, lines = (pathlib.Path(a) for a in sys.argv[1:4])
decoder = json.JSONDecoder()
n = 0
for path in sorted(source.rglob("*.json")):
    # A file holds one record or several, one after the other.
    text, at = path.read_text(encoding="utf-8"), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            break
        record, at = decoder.raw_decode(text, at)
        n += 1
        (target / f"record-{n}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        separated = json.dumps(separate(record), indent=1)
        (target / f"record-{n}-separated.json").write_text(separated, encoding="utf-8")
        # As a forwarder posts it: one line.
        line = json.dumps(separate(record), separators=(",", ":"))
        (lines / f"record-{n}.jsonl").write_text(line, encoding="utf-8")
PY

# Rule seeds: every Sigma rule of the SigmaHQ repository, one file each.
i=0
while IFS= read -r -d '' f; do
    i=$((i + 1))
    cp "$f" "$RULES/rule-$i.yml"
done < <(find "$DATA/rules/sigma" -name '*.yml' -size -64k -print0 | sort -z)

# KQL seeds: every public Defender hunting query, one file per Markdown code block or query file.
python3 - "$DATA/kql/defender-hunting-queries" "$KQL" <<'PY'
import pathlib, re, sys

source, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
n = 0
for path in sorted(source.rglob("*")):
    if path.suffix not in (".md", ".txt"):
        continue
    text = path.read_text(encoding="utf-8", errors="replace")
    blocks = re.findall(r"^\s*(?:```|~~~)[^\n]*\n(.*?)^\s*(?:```|~~~)", text, re.M | re.S)
    for block in blocks if path.suffix == ".md" else [text]:
        n += 1
        (target / f"query-{n}.kql").write_text(block, encoding="utf-8")
PY

echo "$(ls "$EVTX" | wc -l) seeds in $EVTX, $(ls "$RULES" | wc -l) in $RULES, $(ls "$KQL" | wc -l) in $KQL, $(ls "$LINES" | wc -l) in $LINES"

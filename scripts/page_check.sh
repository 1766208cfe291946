#!/usr/bin/env bash
# Checks the steering page of `panacea serve` in headless Chromium (Debian package `chromium`).
#
# Usage: scripts/page_check.sh BASE_URL OUT_DIR     (e.g. http://127.0.0.1:8000 /tmp/page)
#
# 1. Loads BASE_URL/?selftest, where the page moves its λ slider to 30 % as a user would and
#    writes the `preference` a message would then send into <pre id="selftest">; the DOM must
#    show λ = (0.5, 0.5) before and (0.3, 0.7) after, for the objectives of the served adapter.
# 2. Takes a screenshot of BASE_URL/ into OUT_DIR/page.png.
# Exits 0 when both hold; 2 when no Chromium is installed (callers skip); 1 otherwise.
set -euo pipefail
url=${1:?base URL}
out=${2:?output folder}
browser=""
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [ -z "$browser" ]; then
    echo "no chromium on PATH (Debian: apt-get install chromium)" >&2
    exit 2
fi
mkdir -p "$out"
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=10000)
"$browser" "${flags[@]}" --dump-dom "$url/?selftest" > "$out/dom.html" 2> "$out/chromium.log"
if ! grep -q '<pre id="selftest">' "$out/dom.html"; then
    echo "the page did not run its self-test; DOM in $out/dom.html" >&2
    exit 1
fi
selftest=$(sed -n 's:.*<pre id="selftest">\(.*\)</pre>.*:\1:p' "$out/dom.html")
expected='{"objectives":["helpful","harmless"],"before":[0.5,0.5],"after":[0.3,0.7]}'
if [ "$selftest" != "$expected" ]; then
    echo "moving the slider sent $selftest, expected $expected" >&2
    exit 1
fi
"$browser" "${flags[@]}" --window-size=1000,700 --screenshot="$out/page.png" "$url/" 2>> "$out/chromium.log"
test -s "$out/page.png" || { echo "no screenshot in $out/page.png" >&2; exit 1; }
echo "page ok: $selftest; screenshot $out/page.png"

#!/usr/bin/env bash
# Checks the steering page of `panacea serve`, and the interactive front of an eval-front
# report, in headless Chromium (Debian package `chromium`).
#
# Usage: scripts/page_check.sh BASE_URL OUT_DIR [GRID_POINTS]   (e.g. http://127.0.0.1:8000 /tmp/page)
#        scripts/page_check.sh --front REPORT_HTML GRID_POINTS OUT_DIR
#
# Page mode:
# 1. Loads BASE_URL/?selftest, where the page moves its λ slider to 30 % as a user would and
#    writes the `preference` a message would then send into <pre id="selftest">; the DOM must
#    show λ = (0.5, 0.5) before and (0.3, 0.7) after, for the objectives of the served adapter.
# 2. With GRID_POINTS (the server was started with --report): the embedded front must mark the
#    grid point nearest the moved λ (<pre id="selftest-front">), and BASE_URL/report.html must
#    pass the front check below.
# 3. Takes a screenshot of BASE_URL/ into OUT_DIR/page.png.
# Front mode (REPORT_HTML: a file such as eval-front's report.html, or a URL):
#    loads it with #selftest, where it hovers its first grid point; the DOM must hold exactly
#    GRID_POINTS circles of the steered front and the hovered point's λ and sample answer.
#    Screenshot: OUT_DIR/front.png.
# Exits 0 when all hold; 2 when no Chromium is installed (callers skip); 1 otherwise.
set -euo pipefail
browser=""
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [ -z "$browser" ]; then
    echo "no chromium on PATH (Debian: apt-get install chromium)" >&2
    exit 2
fi
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=10000)

# front_check URL GRID_POINTS OUT_DIR
front_check() {
    local url=$1 want=$2 out=$3
    mkdir -p "$out"
    "$browser" "${flags[@]}" --dump-dom "$url#selftest" > "$out/front-dom.html" 2>> "$out/chromium.log"
    local got
    got=$(grep -o '<circle class="pt grid"' "$out/front-dom.html" | wc -l)
    if [ "$got" != "$want" ]; then
        echo "the front drew $got grid points, expected $want; DOM in $out/front-dom.html" >&2
        exit 1
    fi
    local tip
    tip=$(tr '\n' ' ' < "$out/front-dom.html" | sed -n 's:.*<div id="tip">\([^<]*\)</div>.*:\1:p')
    case "$tip" in
        *"λ = "*"Answer: "*) ;;
        *) echo "hovering a grid point showed ${tip:-nothing}, expected its λ and an answer" >&2; exit 1 ;;
    esac
    "$browser" "${flags[@]}" --window-size=700,700 --screenshot="$out/front.png" "$url" 2>> "$out/chromium.log"
    test -s "$out/front.png" || { echo "no screenshot in $out/front.png" >&2; exit 1; }
    echo "front ok: $got grid points; hover: ${tip:0:80}"
}

if [ "${1:-}" = "--front" ]; then
    report=${2:?report.html file or URL}
    grid=${3:?number of grid points}
    out=${4:?output folder}
    case "$report" in
        http://*|https://*|file://*) url=$report ;;
        *) url="file://$(realpath "$report")" ;;
    esac
    front_check "$url" "$grid" "$out"
    exit 0
fi

url=${1:?base URL}
out=${2:?output folder}
grid=${3:-}
mkdir -p "$out"
"$browser" "${flags[@]}" --dump-dom "$url/?selftest" > "$out/dom.html" 2> "$out/chromium.log"
if ! grep -q '<pre id="selftest">' "$out/dom.html"; then
    echo "the page did not run its self-test; DOM in $out/dom.html" >&2
    exit 1
fi
selftest=$(sed -n 's:.*<pre id="selftest">\(.*\)</pre>.*:\1:p' "$out/dom.html" | sed 's:</pre>.*::')
expected='{"objectives":["helpful","harmless"],"before":[0.5,0.5],"after":[0.3,0.7]}'
if [ "$selftest" != "$expected" ]; then
    echo "moving the slider sent $selftest, expected $expected" >&2
    exit 1
fi
if [ -n "$grid" ]; then
    marked=$(tr '\n' ' ' < "$out/dom.html" | sed -n 's:.*<pre id="selftest-front">\([^<]*\)</pre>.*:\1:p')
    case "$marked" in
        "current λ: helpful=0.30, harmless=0.70 — nearest grid λ: "*) ;;
        *) echo "the embedded front marked '${marked}', expected λ = (0.30, 0.70)" >&2; exit 1 ;;
    esac
    front_check "$url/report.html" "$grid" "$out"
fi
"$browser" "${flags[@]}" --window-size=1000,700 --screenshot="$out/page.png" "$url/" 2>> "$out/chromium.log"
test -s "$out/page.png" || { echo "no screenshot in $out/page.png" >&2; exit 1; }
echo "page ok: $selftest${grid:+; front marked: $marked}; screenshot $out/page.png"

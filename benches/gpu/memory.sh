#!/usr/bin/env bash
# Issue #20, "Memory for real sizes": the one GPU check of DPO memory at real sizes. On the GPU
# machine (no Rust toolchain; python3 with torch 2.11), from the repository root, with the
# release binary built on the CPU machine (`bash benches/gpu/build_memory.sh`) and carried
# along (carry: ["target/gpu"]):
#
#   bash benches/gpu/memory.sh [OUT]        # default OUT: dpo-memory-out
#
# Each case is one process of target/gpu/dpo_memory (random weights of a configs/shapes/ shape,
# made in bf16 on the GPU, nothing written but small JSON files), two DPO steps of pairs of
# 1,024-token sequences, in this order (estimates from panacea_dpo::pair_memory_estimate):
#   1. llama-8b-ck:        Llama 3.1 8B, 8 pairs, checkpointing on: the issue's goal, a peak
#                          within 80 GB (estimate 40.6 GB);
#   2. qwen-1.5b-plain-b4: Qwen2.5-1.5B, 4 pairs, no checkpointing: the peer that surely fits
#                          (estimate 34.2 GB);
#   3. qwen-1.5b-plain:    Qwen2.5-1.5B, 8 pairs, no checkpointing (estimate 65.2 GB; the CPU
#                          tests put a step's transient at 1.0-2.0x its estimate, so an
#                          out-of-memory here is possible and is recorded as such);
#   4. llama-8b-plain:     Llama 3.1 8B, 8 pairs, no checkpointing (estimate 121.7 GB): an
#                          out-of-memory is the expected result (exit 2), recorded in its JSON.
# Budget: under 5 minutes of device time in all (each case at most CASE_LIMIT seconds, default
# 70). Then summary.txt sets every case's measured peak beside its estimate.
# Environment: BIN (default target/gpu/dpo_memory), PYTHON (default python3), PAIRS (8),
# SEQ_LEN (1024), CASE_LIMIT (70), DEVICE (cuda).
set -uo pipefail

OUT=${1:-dpo-memory-out}
BIN=${BIN:-target/gpu/dpo_memory}
PYTHON=${PYTHON:-python3}
PAIRS=${PAIRS:-8}
SEQ_LEN=${SEQ_LEN:-1024}
CASE_LIMIT=${CASE_LIMIT:-70}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"

# libtorch (and the CUDA runtime panacea-shim links) from this machine's own torch wheel.
TORCH_LIB=$("$PYTHON" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
CUDA_LIB="$TORCH_LIB/../../nvidia/cu13/lib"
export LD_LIBRARY_PATH="$TORCH_LIB:$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PYTHON" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  ls -l "$BIN"
  ldd "$BIN" | grep -E "torch|c10|cudart|not found"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ ! -x "$BIN" ]; then
  echo "error: $BIN is missing; build it on the CPU machine and carry it (see the header)" >&2
  exit 1
fi

run_case() {
  local name=$1 shape=$2 pairs=$3
  shift 3
  echo "== $name"
  timeout "$CASE_LIMIT" "$BIN" --shape "configs/shapes/$shape" --device "$DEVICE" --dtype bf16 \
    --pairs "$pairs" --seq-len "$SEQ_LEN" --steps 2 --out "$OUT/$name.json" "$@" 2>&1 \
    | tee "$OUT/$name.log"
  echo "$name exit: ${PIPESTATUS[0]}" | tee -a "$OUT/exits.txt"
}
run_case llama-8b-ck llama-3.1-8b.json "$PAIRS" --checkpointing
run_case qwen-1.5b-plain-b4 qwen2.5-1.5b.json $(( PAIRS / 2 ))
run_case qwen-1.5b-plain qwen2.5-1.5b.json "$PAIRS"
run_case llama-8b-plain llama-3.1-8b.json "$PAIRS"

"$PYTHON" - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f"{'case':<20} {'estimate GB':>11} {'peak GB':>8} {'peak/est':>8} {'≤ 80 GB':>7} {'step s':>14}  error")
for name in ["llama-8b-ck", "qwen-1.5b-plain-b4", "qwen-1.5b-plain", "llama-8b-plain"]:
    p = out / f"{name}.json"
    if not p.exists():
        print(f"{name:<20} (no result: cut by the time limit or crashed; see {name}.log)")
        continue
    r = json.loads(p.read_text())
    est = r["estimate"]["total_gb"]
    steps = " ".join(f"{s['seconds']:.2f}" for s in r.get("steps", []))
    peak = r.get("peak_gb")
    ratio = r.get("peak_over_estimate")
    fits = r.get("within_budget")
    err = (r.get("error") or "")[:80].replace("\n", " ")
    print(f"{name:<20} {est:>11.2f} {peak if peak is not None else float('nan'):>8.2f} "
          f"{ratio if ratio is not None else float('nan'):>8.2f} {str(fits):>7} {steps:>14}  {err}")
PY

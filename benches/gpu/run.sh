#!/usr/bin/env bash
# Issue #10: the one GPU check. On the GPU machine (no Rust toolchain; python3 with torch 2.11),
# from the repository root, with the release binary built on the CPU machine and carried along:
#
#   bash benches/gpu/run.sh [OUT]          # default OUT: gpu-bench-out
#
# Build first, on the CPU machine: `bash benches/gpu/build.sh` (release build, stripped into
# target/gpu/gpu_bench, about 4 MB; it links only libtorch, dynamically); carry target/gpu.
#
# Runs the Rust bench (gpu_bench.json), the PyTorch-eager reference (gpu_reference.json) on the
# same card, then prints the ratio table and the goals last (compare.txt / compare.json).
# Environment: BIN (the binary), PYTHON (default python3), SIZES (full | small), DEVICE
# (default cuda), DTYPE (default bf16), BUDGET (seconds for both halves, default 560, so the
# whole script fits one 10-minute command; the Rust half gets at most 300 of them and the
# reference the rest; each JSON is rewritten after every workload, so a cut keeps what finished),
# REF_ARGS (extra flags for the reference script).
set -uo pipefail

OUT=${1:-gpu-bench-out}
BIN=${BIN:-target/gpu/gpu_bench}
PYTHON=${PYTHON:-python3}
SIZES=${SIZES:-full}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
mkdir -p "$OUT"

# 1. libtorch from this machine's own torch wheel; the binary
#    dlopens libtorch_cuda.so itself at start-up (panacea_core::device::init_torch).
TORCH_LIB=$("$PYTHON" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
# The wheel's CUDA runtime too: panacea-shim's graph code (the static decoder) links
# libcudart.so.13 where it was built with CUDA.
CUDA_LIB="$TORCH_LIB/../../nvidia/cu13/lib"
export LD_LIBRARY_PATH="$TORCH_LIB:$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PYTHON" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  ls -l "$BIN"
  ldd "$BIN" | grep -E "torch|c10|not found"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ ! -x "$BIN" ]; then
  echo "error: $BIN is missing; build it on the CPU machine and carry it (see the header)" >&2
  exit 1
fi

# 2. Rust (tch), then 3. the PyTorch-eager reference, same card, same shapes.
BUDGET=${BUDGET:-560}
START=$SECONDS
timeout "$(( BUDGET < 300 ? BUDGET / 2 : 300 ))" "$BIN" --device "$DEVICE" --dtype "$DTYPE" --sizes "$SIZES" \
  --out "$OUT" 2>&1 | tee "$OUT/rust.log"
echo "gpu_bench exit: ${PIPESTATUS[0]}"
# The eager model's merged/rows decode modes are not needed by the goals; skipping them saves
# about a minute of device time.
# shellcheck disable=SC2086
REF_LEFT=$(( BUDGET - (SECONDS - START) ))
echo "reference time limit: ${REF_LEFT} s"
timeout "$(( REF_LEFT > 30 ? REF_LEFT : 30 ))" "$PYTHON" scripts/gpu_reference.py --device "$DEVICE" \
  --dtype "$DTYPE" --sizes "$SIZES" --out "$OUT" --decode-modes base ${REF_ARGS:-} 2>&1 \
  | tee "$OUT/reference.log"
echo "gpu_reference exit: ${PIPESTATUS[0]}"

# 4. Ratios and goals, printed last.
"$PYTHON" benches/gpu/compare.py "$OUT/gpu_bench.json" "$OUT/gpu_reference.json" \
  --json "$OUT/compare.json" | tee "$OUT/compare.txt"

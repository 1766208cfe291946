#!/usr/bin/env bash
# Issue #22, the NCCL check on a machine with one GPU: `panacea train-dpo` and `train-ppo` on the
# tiny configs as a torchrun world of one over NCCL (PANACEA_DIST_BACKEND=nccl makes a world of
# one join a group; NCCL refuses two ranks on one GPU, so one GPU allows no more), then checks
# that each run's manifest records world_size 1 and backend "nccl" and that the run trained.
#
#   bash benches/dist/nccl_world1.sh build     # CPU machine: writes target/gpu-nccl/ (carry it)
#   bash benches/dist/nccl_world1.sh run [OUT] # GPU machine, repository root (default OUT:
#                                              # nccl-world1-out)
#
# `build` needs NCCL compiled into panacea-shim (`cargo xtask setup` installs the CCCL headers
# it needs) and refuses otherwise. It strips the release `panacea` into target/gpu-nccl/ and
# copies the SmolLM2 tokenizer (not the weights) that the `tiny-random` base uses into
# target/gpu-nccl/cache. `run` needs python3 with torch 2.11 (its libraries and its torchrun);
# PYTHON overrides python3, BIN the binary, STEPS the steps (default 3).
set -euo pipefail
MODE=${1:-}
PACK=target/gpu-nccl

if [ "$MODE" = build ]; then
  eval "$(cargo xtask env)"
  cargo build --release -p panacea-cli --bin panacea
  mkdir -p "$PACK/cache/models/smollm2-135m"
  strip -o "$PACK/panacea" target/release/panacea
  # A shim built without NCCL has no ProcessGroupNCCL in it: stop here, not on the GPU machine.
  if ! nm -DC --undefined-only "$PACK/panacea" | grep -q 'c10d::ProcessGroupNCCL::ProcessGroupNCCL'; then
    echo "error: this panacea was built without NCCL (hint: cargo xtask setup, then rebuild)" >&2
    exit 1
  fi
  SRC=${PANACEA_CACHE:-$HOME/.cache/panacea}/models/smollm2-135m
  cp "$SRC/tokenizer.json" "$SRC/config.json" "$SRC/.fetch-complete" \
    "$PACK/cache/models/smollm2-135m/"
  ls -l "$PACK/panacea"
  echo "ok: $PACK (carry it to the GPU machine)"
  exit 0
fi
if [ "$MODE" != run ]; then
  echo "usage: $0 build | run [OUT]" >&2
  exit 2
fi

OUT=${2:-nccl-world1-out}
BIN=${BIN:-$PACK/panacea}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-3}
mkdir -p "$OUT"
# That machine's own torch wheel: libtorch, and the CUDA runtime the shim links.
TORCH_LIB=$("$PYTHON" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:$TORCH_LIB/../../nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PANACEA_CACHE=$PWD/$PACK/cache
export PANACEA_DIST_BACKEND=nccl PANACEA_DIST_TIMEOUT_S=300 OMP_NUM_THREADS=1
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PYTHON" -c 'import torch;print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "nccl", torch.cuda.nccl.version())'
} | tee "$OUT/env.txt"

status=0
for job in dpo ppo; do
  echo "== train-$job, torchrun world of one, NCCL on cuda:0"
  # torchrun of that same torch; --no-python starts the binary itself.
  if ! "$PYTHON" -m torch.distributed.run --nproc-per-node 1 --master-port "${MASTER_PORT:-29541}" \
      --no-python "$BIN" "train-$job" --config "configs/tiny/$job.yaml" --model tiny-random \
      --device cuda --runs-dir "$OUT/runs" --name "nccl-$job" --set "train.steps=$STEPS" \
      > "$OUT/train-$job.log" 2>&1; then
    echo "FAIL: train-$job exited non-zero; last lines of $OUT/train-$job.log:"
    tail -20 "$OUT/train-$job.log"
    status=1
    continue
  fi
  # The manifest says which backend ran, and the metrics that the steps happened.
  "$PYTHON" - "$OUT/runs" "$job" "$STEPS" <<'PY' || status=1
import json, pathlib, sys
runs, job, steps = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
run = sorted(runs.glob(f"*-nccl-{job}"))[-1]
m = json.loads((run / "manifest.json").read_text())
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
done = max((r.get("step", 0) for r in rows), default=0)
ok = m.get("backend") == "nccl" and m.get("world_size") == 1 and done == steps
print(f"{'ok' if ok else 'FAIL'}: train-{job}: backend={m.get('backend')!r} "
      f"world_size={m.get('world_size')!r} last logged step {done} of {steps} ({run})")
sys.exit(0 if ok else 1)
PY
done
exit $status

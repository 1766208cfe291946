#!/usr/bin/env bash
# Step time of data-parallel `panacea train-dpo` on one machine: 1 process × batch 4,
# 1 process × batch 2 (one rank's share of the work), and 2 Gloo ranks × batch 2 started by
# torchrun, every process on one libtorch thread; plus the gradient all-reduce's time per step
# (`time/allreduce_ms`). Medians over the steps after the first two (the reference cache fills
# on the first pass over the pairs). Base model: $MODEL (default tiny-random).
# Usage: benches/dist/dpo_data_parallel.sh [PANACEA] [STEPS]
set -euo pipefail
PANACEA=${1:-target/debug/panacea}
STEPS=${2:-12}
TORCHRUN=${TORCHRUN:-$HOME/.cache/panacea/libtorch-2.11.0/venv/bin/torchrun}
OUT=$(mktemp -d /tmp/panacea-dp-bench.XXXXXX)
export OMP_NUM_THREADS=1
COMMON=(--config configs/tiny/dpo.yaml --model "${MODEL:-tiny-random}" --runs-dir "$OUT"
  --set "train.steps=$STEPS" --set threads=1 --set dpo.micro_batch_size=0
  --set data.eval=null --set train.save_every=0 --set train.log_every=1
  --set "ref_cache.dir=$OUT/ref-cache")

"$PANACEA" train-dpo "${COMMON[@]}" --name one-b4 --set train.batch_size=4 >/dev/null 2>&1
"$PANACEA" train-dpo "${COMMON[@]}" --name one-b2 --set train.batch_size=2 >/dev/null 2>&1
"$TORCHRUN" --nproc-per-node 2 --no-python --master-port "${MASTER_PORT:-29533}" \
  "$PANACEA" train-dpo "${COMMON[@]}" --name two-b2 --set train.batch_size=2 \
  >/dev/null 2>&1

python3 - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
for name, label in [("one-b4", "1 process × batch 4"),
                    ("one-b2", "1 process × batch 2"),
                    ("two-b2", "2 Gloo ranks × batch 2")]:
    run = next(out.glob(f"*-{name}"))
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time/step_ms" in r][2:]
    step = statistics.median(r["time/step_ms"] for r in rows)
    pairs = statistics.median(r["time/pairs_per_s"] for r in rows)
    ar = [r["time/allreduce_ms"] for r in rows if "time/allreduce_ms" in r]
    ar = f"{statistics.median(ar):.2f} ms" if ar else "—"
    print(f"| {label} | {step:.0f} ms | {pairs:.2f} | {ar} | {len(rows)} |")
PY
rm -rf "$OUT"

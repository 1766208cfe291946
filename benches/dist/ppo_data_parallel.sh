#!/usr/bin/env bash
# Step time of data-parallel `panacea train-ppo` on one machine: 1 process × batch 4,
# 1 process × batch 2 (one rank's share of the work), and 2 Gloo ranks × batch 2 started by
# torchrun, every process on one libtorch thread; plus the time of the step's gradient
# all-reduces (`time/allreduce_ms`: actor and critic, one each per minibatch). Medians over the
# steps after the first two. Base model: $MODEL (default tiny-random).
# Usage: benches/dist/ppo_data_parallel.sh [PANACEA] [STEPS]
set -euo pipefail
PANACEA=${1:-target/debug/panacea}
STEPS=${2:-12}
TORCHRUN=${TORCHRUN:-$HOME/.cache/panacea/libtorch-2.11.0/venv/bin/torchrun}
OUT=$(mktemp -d /tmp/panacea-dp-bench.XXXXXX)
export OMP_NUM_THREADS=1
COMMON=(--config configs/tiny/ppo.yaml --model "${MODEL:-tiny-random}" --runs-dir "$OUT"
  --set "train.steps=$STEPS" --set threads=1 --set train.eval_every=0
  --set train.eval_prompts=1 --set train.save_every=0 --set train.log_every=1)

"$PANACEA" train-ppo "${COMMON[@]}" --name one-b4 --set train.batch_size=4 \
  --set ppo.mini_batch_size=2 >/dev/null 2>&1
"$PANACEA" train-ppo "${COMMON[@]}" --name one-b2 --set train.batch_size=2 \
  --set ppo.mini_batch_size=1 >/dev/null 2>&1
"$TORCHRUN" --nproc-per-node 2 --no-python --master-port "${MASTER_PORT:-29534}" \
  "$PANACEA" train-ppo "${COMMON[@]}" --name two-b2 --set train.batch_size=2 \
  --set ppo.mini_batch_size=1 >/dev/null 2>&1

python3 - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
for name, label in [("one-b4", "1 process × batch 4"),
                    ("one-b2", "1 process × batch 2"),
                    ("two-b2", "2 Gloo ranks × batch 2")]:
    run = next(out.glob(f"*-{name}"))
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time_ms" in r][2:]
    step = statistics.median(r["time_ms"] for r in rows)
    ar = [r["time/allreduce_ms"] for r in rows if "time/allreduce_ms" in r]
    ar = f"{statistics.median(ar):.1f} ms" if ar else "—"
    print(f"| {label} | {step:.0f} ms | {ar} | {len(rows)} |")
PY
rm -rf "$OUT"

#!/usr/bin/env bash
# Issue #8 on a lent GPU: long runs (200–240 steps) of `panacea train-dpo` on the real SmolLM2
# weights, to see when the λ-conditioning shows in held-out accuracy; the CPU default cannot run
# that long within its 15 minutes. Results: benches/dpo/2026-11-27-h200-sweep/, read in
# benches/README.md "DPO main job".
#
# The device tool carries at most 64 MiB per call (working tree included) and the 98 MB GGUF
# does not fit, so the model travels in two calls while the machine stays warm (its /tmp survives
# between calls; the idle release is 30 s, so make the second call at once):
#   mkdir -p target/gpu-dpo target/gpu-dpo-a
#   split -b 50000000 ~/.cache/panacea/downloads/SmolLM2-135M-Instruct.Q4_1.gguf target/gpu-dpo/part_
#   mv target/gpu-dpo/part_aa target/gpu-dpo-a/part_a; mv target/gpu-dpo/part_ab target/gpu-dpo/part_b
#   strip -o /tmp/panacea target/release/panacea; xz -3 -c /tmp/panacea > target/gpu-dpo/panacea.xz
#   cp scripts/gpu_dpo_sweep.sh target/gpu-dpo/sweep.sh   # plus any pairs file it names
#   call 1: run(command='mkdir -p /tmp/m && cp target/gpu-dpo-a/part_a /tmp/m/', carry=["target/gpu-dpo-a"])
#   call 2: run(command='bash target/gpu-dpo/sweep.sh "$OUT"', carry=["target/gpu-dpo"])
# Each run below took 37–71 s on an H200 (about 0.16–0.19 s per step of 4 pairs, f32).
set -u
OUT=${1:?usage: gpu_dpo_sweep.sh OUT_DIR}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB"
D=target/gpu-dpo
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open(\"$D/panacea.xz\"),open(\"$D/panacea\",\"wb\"))" && chmod +x $D/panacea
cat /tmp/m/part_a $D/part_b > /tmp/m/smollm2.gguf
sha256sum /tmp/m/smollm2.gguf > "$OUT/sha.txt"
nvidia-smi --query-gpu=name --format=csv > "$OUT/env.txt"
STEPS=${STEPS:-200}
run() {
  local name=$1; shift
  local t0=$(date +%s)
  timeout ${LIMIT:-90} $D/panacea train-dpo --device cuda --dtype f32 --runs-dir /tmp/runs --name $name \
    --set model=/tmp/m/smollm2.gguf --set data.max_eval_pairs=0 \
    --set train.steps=$STEPS --set train.eval_every=40 --set train.save_every=0 "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
}
# The pairs were data/pairs/smollm2-pku.jsonl after the change to a 0.1 harmless margin (418
# pairs); the first sweep (c*, 240 steps) also ran the old 0.02-margin file (1,010 pairs) as c6.
# Second sweep (s*, 200 steps):
run s1-default-seed1 --set seed=1
run s2-default-seed2 --set seed=2
run s3-lr3e-3-seed0 --set optim.lr=3.0e-3
run s4-lr3e-3-seed1 --set optim.lr=3.0e-3 --set seed=1
run s5-lr3e-3-seed2 --set optim.lr=3.0e-3 --set seed=2
run s6-default-stride3 --set data.eval_prompt_stride=3
# First sweep (c*, STEPS=240): c1 default; c2 β 0.5; c3 β 0.5, lr 1e-3; c4 β 0.5, one λ per
# pair; c5 β 0.5, Tchebycheff; c6 β 0.5 on the 0.02-margin pairs.

#!/usr/bin/env bash
# Issue #20, CPU machine: builds the binary that benches/gpu/memory.sh runs on the GPU machine.
#
#   bash benches/gpu/build_memory.sh     # writes target/gpu/dpo_memory (stripped)
#
# As benches/gpu/build.sh does for gpu_bench: a release build, stripped into target/gpu/ (only
# ~64 MiB can travel to the GPU machine; the binary is a few MB), linking libtorch dynamically,
# so that on the GPU machine it runs against that machine's torch wheel (memory.sh sets
# LD_LIBRARY_PATH). Carry `target/gpu` with the device tool's carry: ["target/gpu"].
# Uses the libtorch environment already set (LIBTORCH), else `cargo xtask env`'s.
set -euo pipefail
if [ -z "${LIBTORCH:-}" ]; then
  eval "$(cargo xtask env)"
fi
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p panacea-benches --bin dpo_memory
mkdir -p target/gpu
strip -o target/gpu/dpo_memory "$TARGET/release/dpo_memory"
ls -l target/gpu/dpo_memory
echo "dynamic libraries (must be libtorch/c10 plus the C/C++ runtime only):"
readelf -d target/gpu/dpo_memory | grep -E "NEEDED|RUNPATH"
# A few-second CPU smoke run on a tiny shape proves the stripped binary works.
cat > target/gpu/smoke-shape.json <<'JSON'
{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
 "tie_word_embeddings": true}
JSON
OMP_NUM_THREADS=1 target/gpu/dpo_memory --shape target/gpu/smoke-shape.json --device cpu \
  --dtype f32 --pairs 2 --seq-len 32 --threads 1 --out target/gpu/smoke/dpo_memory.json > /dev/null
echo "ok: target/gpu/dpo_memory"

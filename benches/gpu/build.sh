#!/usr/bin/env bash
# Issue #10, CPU machine: builds the binary that benches/gpu/run.sh runs on the GPU machine.
#
#   bash benches/gpu/build.sh        # writes target/gpu/gpu_bench (stripped, about 4 MB)
#
# The release profile keeps line tables (93 MB unstripped); only ~64 MiB can travel to the GPU
# machine, so the binary is stripped into target/gpu/. It links libtorch_cpu and libc10
# dynamically (checked below) and loads libtorch_cuda.so itself at start-up, so on the GPU
# machine it runs against that machine's own torch wheel through LD_LIBRARY_PATH (run.sh).
# Then carry `target/gpu` to the GPU machine, e.g. the device tool's carry: ["target/gpu"].
set -euo pipefail
eval "$(cargo xtask env)"
cargo build --release -p panacea-benches --bin gpu_bench
mkdir -p target/gpu
strip -o target/gpu/gpu_bench target/release/gpu_bench
ls -l target/gpu/gpu_bench
echo "dynamic libraries (must be libtorch/c10 plus the C/C++ runtime only):"
readelf -d target/gpu/gpu_bench | grep -E "NEEDED|RUNPATH"
# A 2-second CPU smoke run proves the stripped binary works.
OMP_NUM_THREADS=1 target/gpu/gpu_bench --device cpu --dtype f32 --sizes small --threads 1 \
  --only roofline,decode --out target/gpu/smoke > /dev/null
echo "ok: target/gpu/gpu_bench"

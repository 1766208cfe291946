// c10d's NCCL process group for ranks on CUDA devices. build.rs compiles this file only when
// NCCL's header (from the torch wheel's nvidia-nccl package) and CCCL's (`nv/target`, from
// nvidia-cuda-cccl, which the CUDA 13 headers include) were found, and then defines
// PANACEA_SHIM_NCCL everywhere. It is its own translation unit because ProcessGroupNCCL.hpp
// pulls in most of ATen's CUDA headers: only this file pays for them. The collectives are
// dist.cpp's, which run on any c10d backend.
#include "dist.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <c10/cuda/CUDAFunctions.h>

#include <tuple>

namespace {

using panacea_shim::dist::Group;

Group* new_nccl(const char* addr, int port, int rank, int world, bool store_is_served,
                std::chrono::milliseconds timeout, int device) {
  TORCH_CHECK(device >= 0 && device < c10::cuda::device_count(), "cuda:", device,
              " does not exist (this process sees ", static_cast<int>(c10::cuda::device_count()),
              " CUDA devices)");
  // NCCL creates its communicator on the current device at the first collective; each rank
  // makes its own GPU current so that two ranks never share one.
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto store = panacea_shim::dist::connect_store(addr, port, rank, world, store_is_served,
                                                 timeout, "panacea/nccl");
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  // The watchdog's bound on a collective; the waits in dist.cpp use the same value.
  opts->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
  return new Group{store, pg, rank, world, timeout,
                   at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device))};
}

}  // namespace

extern "C" {

// Rendezvous through a TCPStore at `addr:port`, then an NCCL group over it whose rank runs on
// cuda:`device`. Everything else as panacea_shim_dist_new_gloo; the group is freed and driven by
// the same entry points.
int panacea_shim_dist_new_nccl(const char* addr, int port, int rank, int world,
                               int store_is_served, int64_t timeout_ms, int device, void** out) {
  PANACEA_SHIM_TRY(*out = new_nccl(addr, port, rank, world, store_is_served != 0,
                                   std::chrono::milliseconds(timeout_ms), device))
}

// The NCCL version of the headers this file was compiled with, and the one of the library
// libtorch_cuda loaded (ncclGetVersion, which needs no GPU), each as major*10000 +
// minor*100 + patch.
int panacea_shim_nccl_versions(int* headers, int* library) {
  PANACEA_SHIM_TRY({
    *headers = NCCL_MAJOR * 10000 + NCCL_MINOR * 100 + NCCL_PATCH;
    auto [major, minor, patch] = c10d::getNcclVersionTuple();
    *library = major * 10000 + minor * 100 + patch;
  })
}

}  // extern "C"

// Peak memory of libtorch's CUDA caching allocator (what torch.cuda.max_memory_allocated and
// torch.cuda.reset_peak_memory_stats read and reset): the bytes of live tensors at their
// highest since the process started or the last reset, not the memory the allocator reserved.
#include "shim.h"

#ifdef PANACEA_SHIM_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {
#ifndef PANACEA_SHIM_CUDA
[[noreturn]] void no_cuda_memory() {
  throw std::runtime_error("this build of panacea-shim has no CUDA (libtorch_cuda or the CUDA "
                           "headers were missing when it was compiled)");
}
#endif
}  // namespace

extern "C" {

// The peak of the bytes allocated on CUDA device `device` (all pools).
int panacea_shim_cuda_max_memory_allocated(int device, int64_t* out) {
  PANACEA_SHIM_TRY({
#ifdef PANACEA_SHIM_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        static_cast<c10::DeviceIndex>(device));
    constexpr auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *out = stats.allocated_bytes[all].peak;
#else
    (void)device;
    (void)out;
    no_cuda_memory();
#endif
  })
}

// Resets the peaks of device `device` to the current values.
int panacea_shim_cuda_reset_peak_memory_stats(int device) {
  PANACEA_SHIM_TRY({
#ifdef PANACEA_SHIM_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
#else
    (void)device;
    no_cuda_memory();
#endif
  })
}

}  // extern "C"

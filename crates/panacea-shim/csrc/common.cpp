// Error reporting and build facts shared by every module of the shim.
#include "shim.h"

#include <torch/headeronly/version.h>

#include <cstring>

namespace panacea_shim {
namespace {
thread_local std::string last_error;
}
void set_last_error(std::string message) { last_error = std::move(message); }
}  // namespace panacea_shim

extern "C" {

// Copies the calling thread's last error into `buf` (NUL-terminated, truncated to `len`);
// returns the full length of the message.
size_t panacea_shim_last_error(char* buf, size_t len) {
  const std::string& m = panacea_shim::last_error;
  if (buf != nullptr && len > 0) {
    size_t n = m.size() < len - 1 ? m.size() : len - 1;
    std::memcpy(buf, m.data(), n);
    buf[n] = '\0';
  }
  return m.size();
}

// 1 when the CUDA parts were compiled in.
int panacea_shim_built_with_cuda() {
#ifdef PANACEA_SHIM_CUDA
  return 1;
#else
  return 0;
#endif
}

// 1 when c10d's NCCL group (dist_nccl.cpp) was compiled in.
int panacea_shim_built_with_nccl() {
#ifdef PANACEA_SHIM_NCCL
  return 1;
#else
  return 0;
#endif
}

// The libtorch version the shim was compiled against, as major*10000 + minor*100 + patch.
int panacea_shim_torch_version() {
  return TORCH_VERSION_MAJOR * 10000 + TORCH_VERSION_MINOR * 100 + TORCH_VERSION_PATCH;
}

// Writes the tensor's element count: proves the tch pointer is an `at::Tensor*` as the shim
// sees it (same ABI, same library).
int panacea_shim_tensor_numel(const at::Tensor* tensor, int64_t* out) {
  PANACEA_SHIM_TRY({
    TORCH_CHECK(tensor->defined(), "the tensor is undefined (it holds no storage)");
    *out = tensor->numel();
  })
}

}  // extern "C"

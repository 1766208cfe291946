// The shim's C surface, shared by every module. Each entry point returns 0 on success, or
// nonzero with a message kept per thread for `panacea_shim_last_error` (C++ exceptions never
// cross into Rust). Tensors cross as `at::Tensor*`, the same pointer tch's `C_tensor` is.
#pragma once
#include <ATen/ATen.h>
#include <string>

namespace panacea_shim {
void set_last_error(std::string message);
}

// Runs the body, turning any C++ exception into status 1 plus a message. Variadic, so that a
// body with commas outside parentheses (braced initialisers, templates) stays one argument.
#define PANACEA_SHIM_TRY(...)                                   \
  try {                                                         \
    __VA_ARGS__;                                                \
    return 0;                                                   \
  } catch (const std::exception& e) {                           \
    panacea_shim::set_last_error(e.what());                     \
    return 1;                                                   \
  } catch (...) {                                               \
    panacea_shim::set_last_error("unknown C++ exception");      \
    return 1;                                                   \
  }

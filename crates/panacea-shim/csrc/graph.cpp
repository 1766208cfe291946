// CUDA graph capture and replay (at::cuda::CUDAGraph), for launch-bound loops such as decoding.
//
// Capture runs on a side stream from the pool, as PyTorch's torch.cuda.graph does: capture is
// illegal on the legacy default stream. tch ops issued between begin and end run on the current
// stream, which the guard makes the side stream, so they are recorded, not run. Replay launches
// the whole graph on the caller's current stream. Inputs and outputs must be static tensors
// allocated before capture (or from the graph's private pool during it).
#include "shim.h"

#ifdef PANACEA_SHIM_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <memory>
#include <optional>

struct PanaceaCudaGraph {
  explicit PanaceaCudaGraph(int device)
      : device(device), stream(c10::cuda::getStreamFromPool(false, device)) {}
  int device;
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream stream;
  std::optional<c10::cuda::CUDAStreamGuard> guard;
};
#else
struct PanaceaCudaGraph {};
#endif

namespace {
#ifndef PANACEA_SHIM_CUDA
[[noreturn]] void no_cuda() {
  throw std::runtime_error("this build of panacea-shim has no CUDA (libtorch_cuda or the CUDA "
                           "headers were missing when it was compiled)");
}
#endif
}  // namespace

extern "C" {

// Starts capturing on `device`; `share_pool_with` (or null) names a graph whose private memory
// pool this one shares, as graphs replayed one at a time may.
int panacea_shim_graph_capture_begin(int device, PanaceaCudaGraph* share_pool_with,
                                     PanaceaCudaGraph** out) {
  PANACEA_SHIM_TRY({
#ifdef PANACEA_SHIM_CUDA
    auto g = std::make_unique<PanaceaCudaGraph>(device);
    // Work queued before the capture must finish first: the side stream does not wait for it.
    c10::cuda::device_synchronize();
    g->guard.emplace(g->stream);
    at::cuda::MempoolId_t pool = share_pool_with ? share_pool_with->graph.pool()
                                                 : at::cuda::MempoolId_t{0, 0};
    g->graph.capture_begin(pool);
    *out = g.release();
#else
    (void)device;
    (void)share_pool_with;
    (void)out;
    no_cuda();
#endif
  })
}

// Ends the capture begun by panacea_shim_graph_capture_begin and restores the caller's stream.
int panacea_shim_graph_capture_end(PanaceaCudaGraph* g) {
  PANACEA_SHIM_TRY({
#ifdef PANACEA_SHIM_CUDA
    // The guard goes whether or not capture_end throws: the caller's stream comes back.
    struct Restore {
      PanaceaCudaGraph* g;
      ~Restore() { g->guard.reset(); }
    } restore{g};
    g->graph.capture_end();
#else
    (void)g;
    no_cuda();
#endif
  })
}

// Launches the captured work on the current stream (no host synchronisation).
int panacea_shim_graph_replay(PanaceaCudaGraph* g) {
  PANACEA_SHIM_TRY({
#ifdef PANACEA_SHIM_CUDA
    g->graph.replay();
#else
    (void)g;
    no_cuda();
#endif
  })
}

void panacea_shim_graph_free(PanaceaCudaGraph* g) { delete g; }

}  // extern "C"

// c10d, PyTorch's distributed engine: a TCPStore rendezvous and a Gloo process group, with
// the few collectives the trainers need (they work on any c10d backend: the NCCL group of
// dist_nccl.cpp uses them too). Every collective runs synchronously (wait with the
// group's timeout) and fails with a message naming this rank; a peer that died shows up as a
// closed connection or as the timeout, never as a hang.
#include "dist.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace panacea_shim::dist {

c10::intrusive_ptr<c10d::Store> connect_store(const char* addr, int port, int rank, int world,
                                              bool store_is_served,
                                              std::chrono::milliseconds timeout,
                                              const char* prefix) {
  TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank,
              " is outside a world of size ", world);
  TORCH_CHECK(port > 0 && port < 65536, "port ", port, " is outside 1..65535");
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(port);
  opts.isServer = rank == 0 && !store_is_served;
  opts.numWorkers = world;
  opts.timeout = timeout;
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(addr), opts);
  return c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
}

}  // namespace panacea_shim::dist

namespace {

using panacea_shim::dist::Group;

// Waits for `work` and turns its failure into an exception naming the rank and collective.
void finish(const Group& g, const char* what, const c10::intrusive_ptr<c10d::Work>& work) {
  try {
    work->wait(g.timeout);
  } catch (const std::exception& e) {
    // Gloo names the peer by address; in a world of two the peer's rank is known.
    std::string peer = g.world == 2 ? "rank " + std::to_string(1 - g.rank) : "a peer rank";
    throw std::runtime_error(
        std::string(what) + " failed on rank " + std::to_string(g.rank) + " of " +
        std::to_string(g.world) + " (" + peer + " died or did not answer within " +
        std::to_string(g.timeout.count() / 1000) + " s): " + e.what());
  }
}


// The bodies of the C entry points below (kept out of PANACEA_SHIM_TRY, whose macro argument
// cannot hold bare commas).

Group* new_gloo(const char* addr, int port, int rank, int world, bool store_is_served,
                std::chrono::milliseconds timeout) {
  auto store = panacea_shim::dist::connect_store(addr, port, rank, world, store_is_served,
                                                timeout, "panacea/gloo");

  auto gloo_opts = c10d::ProcessGroupGloo::Options::create(timeout);
  const char* iface = std::getenv("GLOO_SOCKET_IFNAME");
  if (iface != nullptr && iface[0] != '\0') {
    gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
  } else {
    gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo_opts);
  return new Group{store, pg, rank, world, timeout, std::nullopt};
}

void all_reduce(Group& g, at::Tensor& tensor, int op) {
  c10d::AllreduceOptions opts;
  opts.timeout = g.timeout;
  switch (op) {
    case 0:
    case 1:
      opts.reduceOp = c10d::ReduceOp::SUM;
      break;
    case 2:
      opts.reduceOp = c10d::ReduceOp::MAX;
      break;
    case 3:
      opts.reduceOp = c10d::ReduceOp::MIN;
      break;
    default:
      TORCH_CHECK(false, "unknown reduce op ", op);
  }
  std::vector<at::Tensor> tensors{tensor};
  finish(g, "all_reduce", g.backend->allreduce(tensors, opts));
  if (op == 1) {
    tensor.div_(g.world);
  }
}

void broadcast(Group& g, at::Tensor& tensor, int root) {
  TORCH_CHECK(root >= 0 && root < g.world, "broadcast: root rank ", root,
              " is outside a world of size ", g.world);
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = g.timeout;
  std::vector<at::Tensor> tensors{tensor};
  finish(g, "broadcast", g.backend->broadcast(tensors, opts));
}

void all_gather(Group& g, const at::Tensor& input, at::Tensor& output) {
  TORCH_CHECK(output.dim() >= 1 && output.size(0) == g.world, "all_gather: the output's ",
              "first dimension must be the world size ", g.world, ", got shape ",
              output.sizes());
  std::vector<at::Tensor> rows;
  for (int r = 0; r < g.world; ++r) {
    rows.push_back(output.select(0, r));
  }
  std::vector<std::vector<at::Tensor>> outputs{rows};
  std::vector<at::Tensor> inputs{input};
  c10d::AllgatherOptions opts;
  opts.timeout = g.timeout;
  finish(g, "all_gather", g.backend->allgather(outputs, inputs, opts));
}

void barrier(Group& g) {
  c10d::BarrierOptions opts;
  opts.timeout = g.timeout;
  // NCCL's barrier is an all-reduce on some GPU; without a device it guesses one from the
  // rank, which is wrong for every rank but the first on a machine.
  if (g.device) {
    opts.device_ids = {g.device->index()};
  }
  finish(g, "barrier", g.backend->barrier(opts));
}

}  // namespace

extern "C" {

// Rendezvous through a TCPStore at `addr:port` and a Gloo process group over it. Rank 0 serves
// the store unless `store_is_served` says someone else does (torchrun's agent). `timeout_ms`
// bounds the rendezvous and every later collective.
int panacea_shim_dist_new_gloo(const char* addr, int port, int rank, int world,
                               int store_is_served, int64_t timeout_ms, void** out) {
  PANACEA_SHIM_TRY(*out = new_gloo(addr, port, rank, world, store_is_served != 0,
                                   std::chrono::milliseconds(timeout_ms)))
}

void panacea_shim_dist_free(void* group) { delete static_cast<Group*>(group); }

// op: 0 sum, 1 average (Gloo has no AVG: sum, then divide by the world size), 2 max, 3 min.
int panacea_shim_dist_all_reduce(void* group, at::Tensor* tensor, int op) {
  PANACEA_SHIM_TRY(all_reduce(*static_cast<Group*>(group), *tensor, op))
}

int panacea_shim_dist_broadcast(void* group, at::Tensor* tensor, int root) {
  PANACEA_SHIM_TRY(broadcast(*static_cast<Group*>(group), *tensor, root))
}

// `output` is [world, ...input shape]; row r receives rank r's `input`.
int panacea_shim_dist_all_gather(void* group, const at::Tensor* input, at::Tensor* output) {
  PANACEA_SHIM_TRY(all_gather(*static_cast<Group*>(group), *input, *output))
}

int panacea_shim_dist_barrier(void* group) {
  PANACEA_SHIM_TRY(barrier(*static_cast<Group*>(group)))
}

}  // extern "C"

// What the c10d files share: the group object behind the C surface and the store rendezvous.
// dist.cpp holds the backend-independent collectives and the Gloo group; dist_nccl.cpp, compiled
// only when NCCL's and CCCL's headers were found, the NCCL group.
#pragma once
#include "shim.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <optional>

namespace panacea_shim::dist {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int world;
  std::chrono::milliseconds timeout;
  // The rank's CUDA device under NCCL (its barrier must run there); empty under Gloo.
  std::optional<at::Device> device;
};

// A TCPStore at `addr:port` (served by rank 0 unless `store_is_served`), seen through a prefix
// that keeps one backend's keys apart from the launcher's own in a shared (agent) store.
c10::intrusive_ptr<c10d::Store> connect_store(const char* addr, int port, int rank, int world,
                                              bool store_is_served,
                                              std::chrono::milliseconds timeout,
                                              const char* prefix);

}  // namespace panacea_shim::dist

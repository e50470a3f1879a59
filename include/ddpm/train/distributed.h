// Data-parallel training across processes and machines on LibTorch's c10d: rendezvous through a TCPStore set up
// from the conventional environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT — what torchrun,
// Slurm wrappers and Kubernetes operators set), collectives through Gloo (CPU tensors) or NCCL (CUDA builds).
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "ddpm/errors.h"

namespace ddpm {

/// A collective operation that failed or timed out: a peer died, the rendezvous never completed, the port was taken.
class DistributedError : public Error {
 public:
  using Error::Error;
};

/// Where this process sits in a data-parallel job.
struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool enabled() const { return world_size > 1; }
};

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Unset variables take the
/// single-process defaults; malformed or contradictory values (RANK ≥ WORLD_SIZE, a port outside 1–65535) throw
/// InvalidArgument naming the variable.
DistributedEnv distributed_env_from_environment();

/// The collectives data-parallel training needs. All calls are collective: every rank must make them in the same
/// order with tensors of the same shapes.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  /// Sums each tensor over the ranks, in place; all of them are in flight at once.
  virtual void allreduce_sum(const std::vector<at::Tensor>& tensors) = 0;
  /// Copies each tensor of rank `root` into the same tensor of every other rank.
  virtual void broadcast(const std::vector<at::Tensor>& tensors, int root = 0) = 0;
  virtual void barrier() = 0;
};

struct CommunicatorOptions {
  /// How long a collective (and the rendezvous) may wait for the other ranks before failing.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

/// True when this build has c10d with Gloo (Debian: libgloo-dev at build time).
bool distributed_available();

/// Joins the job described by `env`: rank 0 serves the TCPStore at MASTER_ADDR:MASTER_PORT, every rank connects
/// and waits for the others. Throws DistributedError with an actionable message when the port is in use, the
/// address cannot be reached, or not every rank arrives within the timeout.
std::shared_ptr<Communicator> connect_communicator(const DistributedEnv& env, const CommunicatorOptions& options = {});

/// Averages gradients over the ranks: flattens `tensors` into buckets, sums them with `comm`, divides by the world
/// size and copies back. Undefined tensors are skipped (they must be undefined on every rank).
void allreduce_mean(Communicator& comm, const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 25 << 20);

}  // namespace ddpm

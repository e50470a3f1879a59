// Batches for training: a fresh shuffle every epoch that depends only on (seed, epoch), random horizontal flips
// that depend only on (seed, step), and the next batch prepared on a background thread while the current one
// trains. Because a batch is a pure function of the step, resuming needs no loader state. In data-parallel
// training every rank computes the same global batch (batch × world) and keeps its own slice, so each epoch covers
// the data set exactly once and W ranks see the batches one process with W× the batch would.
#pragma once

#include <ATen/ATen.h>

#include <future>
#include <utility>

namespace ddpm {

struct Batch {
  at::Tensor x;       ///< [B, ...] float
  at::Tensor labels;  ///< [B] int64, or undefined
};

class BatchLoader {
 public:
  /// `batch` is the per-rank batch; `rank` of `world` selects this process's slice of the global batch.
  BatchLoader(at::Tensor data, at::Tensor labels, int64_t batch, uint64_t seed, bool random_flip, int rank = 0,
              int world = 1);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  /// The batch of `step`; also starts preparing the batch of step + 1 in the background.
  Batch get(int64_t step);
  /// The batch of `step`, computed here and now (what get() returns, without prefetching).
  Batch make(int64_t step) const;
  int64_t batches_per_epoch() const;

 private:
  at::Tensor data_, labels_;
  int64_t batch_;
  uint64_t seed_;
  int rank_, world_;
  bool flip_;
  int64_t next_step_ = -1;
  std::future<Batch> next_;
};

}  // namespace ddpm

#include "ddpm/train/loader.h"

#include "ddpm/compat.h"
#include "ddpm/errors.h"

namespace ddpm {

BatchLoader::BatchLoader(at::Tensor data, at::Tensor labels, int64_t batch, uint64_t seed, bool random_flip, int rank,
                         int world)
    : data_(std::move(data)),
      labels_(std::move(labels)),
      batch_(batch),
      seed_(seed),
      rank_(rank),
      world_(world),
      flip_(random_flip) {
  if (!data_.defined() || data_.size(0) < 1) throw InvalidArgument("the training data set is empty");
  if (batch_ < 1) throw InvalidArgument("batch must be at least 1");
  if (world_ < 1 || rank_ < 0 || rank_ >= world_) throw InvalidArgument("rank must lie in [0, world)");
}

BatchLoader::~BatchLoader() {
  if (next_.valid()) next_.wait();
}

int64_t BatchLoader::batches_per_epoch() const { return std::max<int64_t>(1, data_.size(0) / (batch_ * world_)); }

Batch BatchLoader::make(int64_t step) const {
  // The global batch of this step; this rank keeps rows [rank·batch, (rank+1)·batch).
  const int64_t N = data_.size(0), B = batch_ * world_;
  at::Tensor idx;
  if (N < B) {
    // A data set smaller than a batch is drawn with replacement.
    auto g = compat::make_cpu_generator(seed_ * 1000003ULL + static_cast<uint64_t>(step) + 1);
    idx = at::randint(0, N, {B}, g, at::TensorOptions().dtype(at::kLong));
  } else {
    const int64_t per_epoch = N / B, epoch = step / per_epoch, k = step % per_epoch;
    auto g = compat::make_cpu_generator(seed_ * 1000003ULL + static_cast<uint64_t>(epoch) + 0x9e3779b9ULL);
    idx = at::randperm(N, g, at::TensorOptions().dtype(at::kLong)).slice(0, k * B, (k + 1) * B);
  }
  const int64_t lo = rank_ * batch_, hi = lo + batch_;
  idx = idx.slice(0, lo, hi);
  Batch b;
  b.x = data_.index_select(0, idx);
  if (labels_.defined()) b.labels = labels_.index_select(0, idx);
  if (flip_ && b.x.dim() == 4) {
    auto g = compat::make_cpu_generator(seed_ * 7919ULL + static_cast<uint64_t>(step) + 0x51ed27ULL);
    auto flip = (at::rand({B}, g) < 0.5).slice(0, lo, hi).view({batch_, 1, 1, 1});
    b.x = at::where(flip, b.x.flip({3}), b.x);
  }
  return b;
}

Batch BatchLoader::get(int64_t step) {
  Batch b;
  if (next_.valid() && next_step_ == step) {
    b = next_.get();
  } else {
    if (next_.valid()) next_.wait();
    b = make(step);
  }
  next_step_ = step + 1;
  next_ = std::async(std::launch::async, [this, s = step + 1] { return make(s); });
  return b;
}

}  // namespace ddpm

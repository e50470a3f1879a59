// Training and scoring noise-aware classifiers (ddpm/models/noisy_classifier.h): cross-entropy on
// x_t = q_sample(x0, t, ε) with t uniform on 0..T-1 (Dhariwal & Nichol 2021), under the diffusion settings of the
// model it will guide; accuracy reported per band of t.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "ddpm/diffusion_config.h"
#include "ddpm/guidance.h"
#include "ddpm/models/noisy_classifier.h"

namespace ddpm {

struct NoisyClassifierTrainOptions {
  int64_t steps = 6000, batch = 128;
  double lr = 1e-3;  ///< Adam, cosine-decayed to 0 over the run
  uint64_t seed = 0;
  bool random_flip = true;  ///< images only
  /// Called after every step with (step, total steps, running loss).
  std::function<void(int64_t, int64_t, double)> progress;
};

/// Trains `net` on items x [N, ...] (images in [-1, 1], or points) with labels y [N] in 0..K-1. Throws
/// InvalidArgument for mismatched shapes or labels, or when the loss stops being finite.
void train_noisy_classifier(NoisyClassifierNet& net, const DiffusionConfig& diffusion, const at::Tensor& x,
                            const at::Tensor& y, const NoisyClassifierTrainOptions& options);

struct BandAccuracy {
  int64_t t_begin = 0, t_end = 0;  ///< timesteps t_begin..t_end-1
  int64_t count = 0;
  double accuracy = 0;
};

/// Accuracy of a noisy classifier on x_t = q_sample(x0, t, ε), `repeats` draws per item in each of `bands` equal
/// bands of 0..T-1, t uniform within the band. t and ε depend only on (seed, band, repeat, item), so two classifiers
/// are scored on the very same x_t. Throws InvalidArgument for bands < 1 or mismatched shapes.
std::vector<BandAccuracy> noisy_accuracy_by_band(const NoisyClassifier& classifier, const DiffusionConfig& diffusion,
                                                 const at::Tensor& x, const at::Tensor& y, int64_t bands = 5,
                                                 int64_t repeats = 1, uint64_t seed = 0, int64_t batch = 500);

}  // namespace ddpm

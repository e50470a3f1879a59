// Training the evaluation classifier of ddpm/models/classifier.h (Adam with a cosine decay, random flips).
#pragma once

#include <ATen/ATen.h>

#include <functional>

#include "ddpm/models/classifier.h"

namespace ddpm {

struct ClassifierTrainOptions {
  int64_t epochs = 10, batch = 128;
  double lr = 2e-3;  ///< Adam, cosine-decayed to 0 over the run
  uint64_t seed = 0;
  bool random_flip = true;
  /// Called after every step with (step, total steps, running loss); after every epoch `on_epoch(epoch, accuracy)`
  /// with the accuracy on the held-out set when one is given (else NaN).
  std::function<void(int64_t, int64_t, double)> progress;
  std::function<void(int64_t, double)> on_epoch;
};

/// Trains on images [N, C, H, W] in [-1, 1] with labels [N]; `test_x`/`test_y` (optional) are scored each epoch.
void train_classifier(Classifier& net, const at::Tensor& x, const at::Tensor& y, const ClassifierTrainOptions& o,
                      const at::Tensor& test_x = {}, const at::Tensor& test_y = {});

}  // namespace ddpm

#include "ddpm/train/classifier.h"

#include <c10/core/GradMode.h>
#include <torch/utils.h>

#include <cmath>

#include "ddpm/compat.h"
#include "ddpm/errors.h"
#include "ddpm/train/adam.h"
#include "ddpm/train/loader.h"

namespace ddpm {

void train_classifier(Classifier& net, const at::Tensor& x, const at::Tensor& y, const ClassifierTrainOptions& o,
                      const at::Tensor& test_x, const at::Tensor& test_y) {
  if (!x.defined() || x.dim() != 4 || !y.defined() || y.size(0) != x.size(0))
    throw InvalidArgument("classifier training needs images [N, C, H, W] and labels [N]");
  if (o.epochs < 1 || o.batch < 1) throw InvalidArgument("epochs and batch must be at least 1");
  if (y.max().item<int64_t>() >= net.options().num_classes || y.min().item<int64_t>() < 0)
    throw InvalidArgument("labels must lie in 0.." + std::to_string(net.options().num_classes - 1));
  BatchLoader loader(x, y.to(at::kLong), o.batch, o.seed, o.random_flip);
  const int64_t per_epoch = loader.batches_per_epoch(), total = per_epoch * o.epochs;
  Adam adam(net.parameters(), 0.9, 0.999, 1e-8);
  torch::manual_seed(o.seed);  // dropout masks
  double running = std::nan("");
  for (int64_t step = 0; step < total; ++step) {
    net.train();
    auto b = loader.get(step);
    for (auto& p : net.parameters()) p.mutable_grad() = at::Tensor();
    auto loss = at::cross_entropy_loss(net.forward(b.x), b.labels);
    loss.backward();
    const double lr = 0.5 * o.lr * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total)));
    adam.step(lr);
    const double l = loss.item<double>();
    if (!std::isfinite(l)) throw InvalidArgument("classifier loss became " + std::to_string(l) + " at step " + std::to_string(step));
    running = std::isnan(running) ? l : 0.98 * running + 0.02 * l;
    if (o.progress) o.progress(step + 1, total, running);
    if ((step + 1) % per_epoch == 0 && o.on_epoch) {
      const double acc = test_x.defined() ? classifier_accuracy(net, test_x, test_y) : std::nan("");
      o.on_epoch((step + 1) / per_epoch, acc);
    }
  }
  net.eval();
}

}  // namespace ddpm

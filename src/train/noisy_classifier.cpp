#include "ddpm/train/noisy_classifier.h"

#include <c10/core/GradMode.h>

#include <cmath>

#include "ddpm/compat.h"
#include "ddpm/errors.h"
#include "ddpm/train/adam.h"
#include "ddpm/train/loader.h"

namespace ddpm {
namespace {

void check_items(const at::Tensor& x, const at::Tensor& y, int64_t num_classes) {
  if (!x.defined() || x.dim() < 2 || !y.defined() || y.dim() != 1 || y.size(0) != x.size(0) || x.size(0) == 0)
    throw InvalidArgument("a noisy classifier needs items [N, ...] and one label per item [N]");
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  if (lo < 0 || (num_classes > 0 && hi >= num_classes))
    throw InvalidArgument("labels must lie in 0.." + std::to_string(num_classes - 1) + "; found " +
                          std::to_string(lo) + ".." + std::to_string(hi));
}

}  // namespace

void train_noisy_classifier(NoisyClassifierNet& net, const DiffusionConfig& diffusion, const at::Tensor& x,
                            const at::Tensor& y, const NoisyClassifierTrainOptions& o) {
  check_items(x, y, net.options().num_classes);
  std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
  if (shape != net.options().item_shape())
    throw InvalidArgument("the items are " + std::string(c10::str(x.sizes())) + " but the classifier takes " +
                          std::string(c10::str(net.options().item_shape())));
  if (o.steps < 1 || o.batch < 1) throw InvalidArgument("steps and batch must be at least 1", "steps");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) throw InvalidArgument("the learning rate must be positive", "lr");
  const auto process = diffusion.make();
  const int64_t T = process.num_timesteps();
  BatchLoader loader(x.to(at::kFloat), y.to(at::kLong), o.batch, o.seed, o.random_flip && x.dim() == 4);
  Adam adam(net.parameters(), 0.9, 0.999, 1e-8);
  auto gen = compat::make_cpu_generator(o.seed ^ 0x6e6f697379ULL);  // timesteps and noise, one stream for the run
  torch::manual_seed(o.seed);                               // dropout masks
  double running = std::nan("");
  net.train();
  for (int64_t step = 0; step < o.steps; ++step) {
    auto b = loader.get(step);
    const int64_t n = b.x.size(0);
    auto t = at::randint(0, T, {n}, gen, at::TensorOptions().dtype(at::kLong));
    auto noise = at::randn(b.x.sizes(), gen, b.x.options());
    auto xt = process.q_sample(b.x, t, noise).to(at::kFloat);
    for (auto& p : net.parameters()) p.mutable_grad() = at::Tensor();
    auto loss = at::cross_entropy_loss(net.forward(xt, t), b.labels);
    loss.backward();
    const double lr = 0.5 * o.lr * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(o.steps)));
    adam.step(lr);
    const double l = loss.item<double>();
    if (!std::isfinite(l))
      throw InvalidArgument("the noisy classifier's loss became " + std::to_string(l) + " at step " +
                            std::to_string(step) + "; try a smaller --lr");
    running = std::isnan(running) ? l : 0.98 * running + 0.02 * l;
    if (o.progress) o.progress(step + 1, o.steps, running);
  }
  net.eval();
}

std::vector<BandAccuracy> noisy_accuracy_by_band(const NoisyClassifier& classifier, const DiffusionConfig& diffusion,
                                                 const at::Tensor& x, const at::Tensor& y, int64_t bands,
                                                 int64_t repeats, uint64_t seed, int64_t batch) {
  check_items(x, y, 0);
  if (bands < 1 || repeats < 1 || batch < 1)
    throw InvalidArgument("bands, repeats and batch must be at least 1", "bands");
  const auto process = diffusion.make();
  const int64_t T = process.num_timesteps(), N = x.size(0);
  if (bands > T) throw InvalidArgument("more bands than timesteps", "bands");
  at::NoGradGuard no_grad;
  auto x0 = x.to(at::kFloat);
  auto labels = y.to(at::kLong);
  std::vector<BandAccuracy> out;
  for (int64_t b = 0; b < bands; ++b) {
    BandAccuracy r;
    r.t_begin = b * T / bands;
    r.t_end = (b + 1) * T / bands;
    int64_t right = 0;
    for (int64_t rep = 0; rep < repeats; ++rep) {
      auto gen = compat::make_cpu_generator(seed * 1000003ULL + static_cast<uint64_t>(b) * 7919ULL + static_cast<uint64_t>(rep));
      auto t = at::randint(r.t_begin, r.t_end, {N}, gen, at::TensorOptions().dtype(at::kLong));
      auto noise = at::randn(x0.sizes(), gen, x0.options());
      for (int64_t i = 0; i < N; i += batch) {
        const int64_t n = std::min(batch, N - i);
        auto ti = t.slice(0, i, i + n);
        auto xt = process.q_sample(x0.slice(0, i, i + n), ti, noise.slice(0, i, i + n));
        auto logits = classifier(xt, ti);
        right += logits.argmax(1).eq(labels.slice(0, i, i + n)).sum().item<int64_t>();
      }
      r.count += N;
    }
    r.accuracy = static_cast<double>(right) / static_cast<double>(r.count);
    out.push_back(r);
  }
  return out;
}

}  // namespace ddpm

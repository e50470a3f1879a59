#include "ddpm/guidance.h"

#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>

#include "ddpm/errors.h"

namespace ddpm {

at::Tensor classifier_gradient(const NoisyClassifier& classifier, const at::Tensor& x, const at::Tensor& t,
                               const at::Tensor& y) {
  if (!y.defined() || y.dim() != 1 || y.size(0) != x.size(0))
    throw InvalidArgument("classifier guidance needs one class label per item", "class");
  c10::InferenceMode off(false);
  at::AutoGradMode grad(true);
  // A normal (not inference) copy that records the graph; t and y only index.
  auto xg = x.detach().clone().requires_grad_(true);
  auto logits = classifier(xg, t.clone());
  if (logits.dim() != 2 || logits.size(0) != x.size(0))
    throw InvalidArgument("a classifier must return logits [B, K]; got " + std::string(c10::str(logits.sizes())));
  const int64_t K = logits.size(1);
  auto yy = y.clone().to(at::kLong);
  if (yy.min().item<int64_t>() < 0 || yy.max().item<int64_t>() >= K)
    throw InvalidArgument("a guided class is outside the classifier's 0.." + std::to_string(K - 1), "class");
  auto selected = at::log_softmax(logits, 1).gather(1, yy.unsqueeze(1)).sum();
  auto g = torch::autograd::grad({selected}, {xg})[0];
  return g.detach().to(x.dtype());
}

Denoiser classifier_guidance(Denoiser model, NoisyClassifier classifier, std::vector<double> alphas_cumprod,
                             double scale, MeanType mean_type, bool learned_variance,
                             std::optional<int64_t> model_label) {
  if (mean_type != MeanType::eps)
    throw InvalidArgument("classifier guidance through the score needs a model that predicts ε", "mean_type");
  if (!std::isfinite(scale)) throw InvalidArgument("the classifier scale must be finite", "classifier_scale");
  auto sqrt_one_minus = std::make_shared<at::Tensor>(
      at::tensor(alphas_cumprod, at::TensorOptions().dtype(at::kDouble)).neg().add(1.0).sqrt());
  return [=](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    at::Tensor inner_y;
    if (model_label) inner_y = at::full({x.size(0)}, *model_label, at::TensorOptions().dtype(at::kLong).device(x.device()));
    auto out = model(x, t, inner_y);
    auto g = classifier_gradient(classifier, x, t, y);
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = x.size(0);
    auto coef = at::index_select(*sqrt_one_minus, 0, t.to(at::kCPU).to(at::kLong)).to(x.dtype()).to(x.device()).view(shape);
    const int64_t C = x.size(1);
    if (learned_variance) {
      auto eps = out.narrow(1, 0, C) - scale * coef * g;
      return at::cat({eps, out.narrow(1, C, out.size(1) - C)}, 1);
    }
    return out - scale * coef * g;
  };
}

std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)> classifier_mean_guidance(
    NoisyClassifier classifier, double scale) {
  if (!std::isfinite(scale)) throw InvalidArgument("the classifier scale must be finite", "classifier_scale");
  return [classifier = std::move(classifier), scale](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    return scale * classifier_gradient(classifier, x, t, y);
  };
}

}  // namespace ddpm

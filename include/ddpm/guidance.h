// Classifier guidance (Dhariwal & Nichol 2021): a noise-aware classifier p_φ(y | x_t, t) steers a diffusion model
// towards class y, either by shifting DDPM's ancestral mean (their Algorithm 1) or through the score, for DDIM and
// DPM-Solver++ (their Algorithm 2). Gradients flow through the classifier only; the model stays in inference mode.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <vector>

#include "ddpm/diffusion.h"
#include "ddpm/samplers.h"

namespace ddpm {

/// A noise-aware classifier: (x_t, t) → logits [B, K], differentiable in x_t; t holds the *original* timesteps.
using NoisyClassifier = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t)>;

/// ∇_x log p(y | x, t) = ∇_x log_softmax(logits)[y] by autograd (run outside inference mode on a copy of x), in x's
/// dtype and shape. Throws InvalidArgument if the logits are not [B, K] or a label is outside 0..K-1.
at::Tensor classifier_gradient(const NoisyClassifier& classifier, const at::Tensor& x, const at::Tensor& t,
                               const at::Tensor& y);

/// Algorithm 2 as a denoiser: ε̄ = ε̂(x_t) - s √(1-ᾱ_t) ∇ log p(y | x_t), for a model that predicts ε (with a learned
/// variance only the mean half is guided). ᾱ is the original schedule's (t arrives as original timesteps). The model
/// is called with `model_label` for every item (its null label, for a conditional model) or with no labels; the
/// labels the sampler passes are the classes to guide towards. Throws InvalidArgument unless the mean type is eps.
Denoiser classifier_guidance(Denoiser model, NoisyClassifier classifier, std::vector<double> alphas_cumprod,
                             double scale, MeanType mean_type, bool learned_variance,
                             std::optional<int64_t> model_label = std::nullopt);

/// Algorithm 1 for ddpm_sample (SampleOptions::mean_guidance): the ancestral mean moves by s Σ ∇ log p(y | x_t).
std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y)> classifier_mean_guidance(
    NoisyClassifier classifier, double scale);

}  // namespace ddpm

// Samplers (SPEC §4). Each sees the network only through a Denoiser callback and reports progress through a
// callback; none of them names a network or prints.
#pragma once

#include <ATen/ATen.h>

#include <functional>

#include "ddpm/diffusion.h"
#include "ddpm/diffusion.h"

namespace ddpm {

struct SampleOptions {
  bool clip_denoised = false;  ///< clip x̂0 to [-1, 1] at every step (images)
  at::Tensor y;                ///< class labels [B] (int64), or undefined for unconditional sampling
  ProgressFn progress;         ///< called after every step with (done, total)
  /// Called after step i (counting down from the last index of the process to 0) with the new point x (x_{i-1}
  /// in the paper's terms; the sample after i = 0) and the x̂0 predicted at step i. For progressive generation.
  std::function<void(int64_t i, const at::Tensor& x, const at::Tensor& pred_x0)> on_step;
  /// Draw one noise tensor per step for the first item and use it for the whole batch (DDPM Fig. 8: the reverse
  /// process's noise is fixed across an interpolation).
  bool shared_noise = false;
  /// DDPM ancestral sampling and RePaint only: the mean of p(x_{t-1} | x_t) moves by Σ · mean_guidance(x_t, t, y), t the original
  /// timesteps (classifier guidance, Dhariwal & Nichol Algorithm 1: classifier_mean_guidance in guidance.h).
  std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y)> mean_guidance;
};

/// DDPM ancestral sampling (Algorithm 2) over every step of `diffusion` (respaced or not), from x_T.
/// The last step adds no noise. Noise comes from `gen` (a CPU generator), so results do not depend on device.
at::Tensor ddpm_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T,
                       at::Generator gen, const SampleOptions& opts = {});

/// DDIM (DDIM eq. 12) with stochasticity η ≥ 0 over the steps of `diffusion` (typically respaced):
/// x_prev = √ᾱ_prev x̂0 + √(1-ᾱ_prev-σ²) ε̂ + σ z, σ = η √((1-ᾱ_prev)/(1-ᾱ)) √(1-ᾱ/ᾱ_prev).
at::Tensor ddim_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T, double eta,
                       at::Generator gen, const SampleOptions& opts = {});

/// Deterministic DDIM inversion x0 → x_T: the η = 0 update run forwards, with ε̂ evaluated at the current
/// point and the next step's timestep (the first step has no timestep of its own). With `refine` > 0 each step
/// is then solved as a fixed point, ε̂ re-evaluated at the new point, so that DDIM sampling inverts it exactly
/// (up to the fixed point's convergence) instead of to first order in the step size.
at::Tensor ddim_invert(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x0,
                       const SampleOptions& opts = {}, int refine = 0);

/// DPM-Solver++ (Lu et al. 2022, arXiv 2211.01095) in data prediction over the steps of `diffusion` (typically
/// respaced; "logsnr" spacing is the paper's choice for small images), ending at ᾱ = 1. With λ = ½ log(ᾱ/(1-ᾱ)) and
/// h = λ_prev - λ: order 1 is x_prev = (σ_prev/σ) x - α_prev (e^{-h} - 1) x̂0, which is DDIM with η = 0; order 2 is
/// the multistep "2M" form, x̂0 replaced by D = (1 + 1/2r) x̂0 - (1/2r) x̂0_last with r = h_last/h. The first step
/// and the final one (to σ = 0, where it is x̂0) are first order. One network call per step.
at::Tensor dpm_solver_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T,
                             int order = 2, const SampleOptions& opts = {});

struct LangevinOptions {
  int64_t steps_per_level = 5;  ///< Langevin steps at each noise level
  double step_scale = 0.5;      ///< δ: the step at level t is α_t = δ σ_t², σ_t² = (1-ᾱ_t)/ᾱ_t
  bool denoise_last = true;     ///< return x̂0 of the last level (Jolicoeur-Martineau et al.) instead of x
};

/// Annealed Langevin dynamics (Song & Ermon 2019) with the score s_θ(x_t, t) = -ε_θ/√(1-ᾱ_t) (SPEC §4), over the
/// noise levels of `diffusion`'s steps from the noisiest down. It runs in the variance-exploding coordinates
/// y = x_t/√ᾱ_t, where level t adds noise of std σ_t = √((1-ᾱ_t)/ᾱ_t) and the score is -ε̂/σ_t, so one sample
/// travels through all levels unchanged in scale: y ← y - (α_t/2) ε̂/σ_t + √α_t z. x_T is given as usual (≈ N(0, I)).
/// steps_per_level network calls per level.
at::Tensor langevin_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T,
                           at::Generator gen, const LangevinOptions& lopts = {}, const SampleOptions& opts = {});

struct RepaintOptions {
  int64_t jump = 1;      ///< j: steps down (and back up) between resamplings
  int64_t resample = 1;  ///< r: passes over each stretch of j steps; 1 = plain replacement
};

/// Inpainting by RePaint (Lugmayr et al. 2022) with DDPM's reverse steps over `diffusion` (respaced or not): after
/// each step the known region (mask 1) is replaced by `known` q_sample'd to that step's noise level, and the rest is
/// the model's. With r > 1 each stretch of j steps is run r times, the sample sent back up j steps by
/// q(x_{i+j} | x_i) in between, so that the generated part harmonises with the known one. mask broadcasts against
/// known (1 = keep, 0 = generate); x_T as usual. Throws InvalidArgument for j < 1, r < 1 or mismatched shapes.
at::Tensor repaint_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& known,
                          const at::Tensor& mask, const at::Tensor& x_T, at::Generator gen,
                          const RepaintOptions& ropts = {}, const SampleOptions& opts = {});

/// The steps of `kept` (ascending) up to and including original timestep t, for sampling that starts from x_t
/// (q_sample of real data): t itself is added if `kept` skips it. Throws InvalidArgument if t < 0.
std::vector<int64_t> timesteps_up_to(const std::vector<int64_t>& kept, int64_t t);

/// Spherical interpolation of each item of a and b (flattened), λ ∈ [0, 1]: the right path between two Gaussian
/// latents, whose norms concentrate (DDIM §5.3). Falls back to linear interpolation for parallel vectors.
at::Tensor slerp(const at::Tensor& a, const at::Tensor& b, double lambda);

/// Classifier-free guidance (Ho & Salimans 2022, the seeds' form): ε̄ = (1 + w) ε(x, t, y) - w ε(x, t, ∅), where ∅
/// is `null_label`. Conditional and unconditional calls share one batch. With a learned variance only the
/// mean half of the output is guided; the variance is the conditional one. w = 0 is plain conditional sampling.
Denoiser classifier_free_guidance(Denoiser model, double w, int64_t null_label, bool learned_variance);

}  // namespace ddpm

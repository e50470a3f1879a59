#include "ddpm/samplers.h"

#include <c10/core/InferenceMode.h>

#include <cmath>

#include "ddpm/errors.h"

namespace ddpm {
namespace {

at::Tensor step_t(int64_t i, const at::Tensor& x) {
  return at::full({x.size(0)}, i, at::TensorOptions().dtype(at::kLong).device(x.device()));
}

at::Tensor noise_like(const at::Tensor& x, at::Generator& gen, bool shared = false) {
  if (shared) {
    auto one = x.sizes().vec();
    one[0] = 1;
    return at::randn(one, gen, x.options().device(at::kCPU)).to(x.device()).expand(x.sizes());
  }
  return at::randn(x.sizes(), gen, x.options().device(at::kCPU)).to(x.device());
}

void check_start(const at::Tensor& x, const char* what) {
  if (!x.defined() || x.dim() < 2) throw InvalidArgument(std::string(what) + " must be a batch: [B, ...] with B ≥ 1");
  if (!x.is_floating_point()) throw InvalidArgument(std::string(what) + " must be a floating-point tensor");
}

}  // namespace

at::Tensor ddpm_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T,
                       at::Generator gen, const SampleOptions& opts) {
  check_start(x_T, "x_T");
  c10::InferenceMode guard;
  const int64_t T = diffusion.num_timesteps();
  at::Tensor x = x_T.clone();
  for (int64_t i = T - 1; i >= 0; --i) {
    auto t = step_t(i, x);
    auto p = diffusion.p_mean_variance(model, x, t, opts.y, opts.clip_denoised);
    if (opts.mean_guidance) p.mean = p.mean + p.variance * opts.mean_guidance(x, diffusion.model_timesteps(t), opts.y);
    if (i > 0)
      x = p.mean + (0.5 * p.log_variance).exp() * noise_like(x, gen, opts.shared_noise);
    else
      x = p.mean;  // Algorithm 2: z = 0 at t = 1
    if (opts.on_step) opts.on_step(i, x, p.pred_x0);
    if (opts.progress) opts.progress(T - i, T);
  }
  return x;
}

at::Tensor ddim_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T, double eta,
                       at::Generator gen, const SampleOptions& opts) {
  check_start(x_T, "x_T");
  if (!(eta >= 0.0)) throw InvalidArgument("eta must be ≥ 0 (got " + std::to_string(eta) + ")");
  c10::InferenceMode guard;
  const int64_t T = diffusion.num_timesteps();
  const auto& ac = diffusion.alphas_cumprod();
  const auto& acp = diffusion.alphas_cumprod_prev();
  at::Tensor x = x_T.clone();
  for (int64_t i = T - 1; i >= 0; --i) {
    auto t = step_t(i, x);
    auto p = diffusion.p_mean_variance(model, x, t, opts.y, opts.clip_denoised);
    // ε̂ re-derived from the (possibly clipped) x̂0, so the update stays consistent with it.
    auto eps = diffusion.predict_eps_from_x0(x, t, p.pred_x0);
    const double sigma = eta * std::sqrt((1.0 - acp[i]) / (1.0 - ac[i])) * std::sqrt(1.0 - ac[i] / acp[i]);
    x = p.pred_x0 * std::sqrt(acp[i]) + eps * std::sqrt(std::max(0.0, 1.0 - acp[i] - sigma * sigma));
    if (i > 0 && sigma > 0.0) x = x + sigma * noise_like(x, gen, opts.shared_noise);
    if (opts.on_step) opts.on_step(i, x, p.pred_x0);
    if (opts.progress) opts.progress(T - i, T);
  }
  return x;
}

at::Tensor ddim_invert(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x0,
                       const SampleOptions& opts, int refine) {
  check_start(x0, "x0");
  if (refine < 0) throw InvalidArgument("refine must be ≥ 0");
  c10::InferenceMode guard;
  const int64_t T = diffusion.num_timesteps();
  const auto& ac = diffusion.alphas_cumprod();
  auto eps_at = [&](const at::Tensor& x, const at::Tensor& t) {
    auto p = diffusion.p_mean_variance(model, x, t, opts.y, false);
    return diffusion.mean_type() == MeanType::eps ? p.model_output : diffusion.predict_eps_from_x0(x, t, p.pred_x0);
  };
  at::Tensor x = x0.clone();
  double a_cur = 1.0;  // ᾱ of the current point; x0 has ᾱ = 1
  for (int64_t i = 0; i < T; ++i) {
    auto t = step_t(i, x);
    // x_next = √ᾱ_i x̂0 + √(1-ᾱ_i) ε̂ with x̂0 = (x - √(1-ᾱ_cur) ε̂)/√ᾱ_cur: the DDIM step solved for its start.
    auto advance = [&](const at::Tensor& eps) {
      auto x0_hat = (x - std::sqrt(1.0 - a_cur) * eps) / std::sqrt(a_cur);
      if (opts.clip_denoised) x0_hat = x0_hat.clamp(-1, 1);
      return x0_hat * std::sqrt(ac[i]) + eps * std::sqrt(1.0 - ac[i]);
    };
    at::Tensor next = advance(eps_at(x, t));
    for (int k = 0; k < refine; ++k) next = advance(eps_at(next, t));
    x = next;
    a_cur = ac[i];
    if (opts.progress) opts.progress(i + 1, T);
  }
  return x;
}

at::Tensor dpm_solver_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T,
                             int order, const SampleOptions& opts) {
  check_start(x_T, "x_T");
  if (order != 1 && order != 2) throw InvalidArgument("DPM-Solver++ order must be 1 or 2 (got " + std::to_string(order) + ")");
  c10::InferenceMode guard;
  const int64_t T = diffusion.num_timesteps();
  const auto& ac = diffusion.alphas_cumprod();
  const auto& acp = diffusion.alphas_cumprod_prev();
  auto half_logsnr = [](double a) { return 0.5 * std::log(a / (1.0 - a)); };
  at::Tensor x = x_T.clone(), last_x0;
  double last_h = 0.0;
  for (int64_t i = T - 1; i >= 0; --i) {
    auto t = step_t(i, x);
    at::Tensor x0 = diffusion.p_mean_variance(model, x, t, opts.y, opts.clip_denoised).pred_x0;
    if (acp[i] >= 1.0) {
      x = x0;  // σ_prev = 0: the first-order step lands on x̂0
    } else {
      const double h = half_logsnr(acp[i]) - half_logsnr(ac[i]);
      at::Tensor d = x0;
      if (order == 2 && last_x0.defined()) {
        const double k = 1.0 / (2.0 * (last_h / h));
        d = (1.0 + k) * x0 - k * last_x0;
      }
      x = std::sqrt((1.0 - acp[i]) / (1.0 - ac[i])) * x - std::sqrt(acp[i]) * std::expm1(-h) * d;
      last_h = h;
    }
    last_x0 = x0;
    if (opts.on_step) opts.on_step(i, x, x0);
    if (opts.progress) opts.progress(T - i, T);
  }
  return x;
}

at::Tensor langevin_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x_T,
                           at::Generator gen, const LangevinOptions& lopts, const SampleOptions& opts) {
  check_start(x_T, "x_T");
  if (lopts.steps_per_level < 1) throw InvalidArgument("Langevin needs at least one step per level");
  if (!(lopts.step_scale > 0.0)) throw InvalidArgument("the Langevin step scale must be > 0");
  c10::InferenceMode guard;
  const int64_t T = diffusion.num_timesteps();
  const auto& ac = diffusion.alphas_cumprod();
  const int64_t total = T * lopts.steps_per_level;
  at::Tensor y = x_T / std::sqrt(ac[T - 1]);
  int64_t done = 0;
  for (int64_t i = T - 1; i >= 0; --i) {
    auto t = step_t(i, y);
    const double sigma = std::sqrt((1.0 - ac[i]) / ac[i]), alpha = lopts.step_scale * sigma * sigma;
    for (int64_t k = 0; k < lopts.steps_per_level; ++k) {
      auto x = std::sqrt(ac[i]) * y;
      auto p = diffusion.p_mean_variance(model, x, t, opts.y, opts.clip_denoised);
      auto eps = diffusion.predict_eps_from_x0(x, t, p.pred_x0);
      y = y - (0.5 * alpha / sigma) * eps + std::sqrt(alpha) * noise_like(y, gen, opts.shared_noise);
      if (opts.on_step && k + 1 == lopts.steps_per_level) opts.on_step(i, std::sqrt(ac[i]) * y, p.pred_x0);
      if (opts.progress) opts.progress(++done, total);
    }
  }
  if (!lopts.denoise_last) return std::sqrt(ac[0]) * y;
  // One more evaluation at the lowest level: x̂0 of the final point.
  auto x = std::sqrt(ac[0]) * y;
  return diffusion.p_mean_variance(model, x, step_t(0, x), opts.y, opts.clip_denoised).pred_x0;
}

std::vector<int64_t> timesteps_up_to(const std::vector<int64_t>& kept, int64_t t) {
  if (t < 0) throw InvalidArgument("the start timestep must be ≥ 0 (got " + std::to_string(t) + ")");
  std::vector<int64_t> out;
  for (int64_t k : kept)
    if (k < t) out.push_back(k);
  out.push_back(t);
  return out;
}

at::Tensor slerp(const at::Tensor& a, const at::Tensor& b, double lambda) {
  if (!a.sizes().equals(b.sizes())) throw InvalidArgument("slerp needs two tensors of one shape");
  auto fa = a.reshape({a.size(0), -1}).to(at::kDouble), fb = b.reshape({b.size(0), -1}).to(at::kDouble);
  auto cos = ((fa * fb).sum(1) / (fa.norm(2, 1) * fb.norm(2, 1))).clamp(-1.0, 1.0);
  auto theta = at::acos(cos).unsqueeze(1);
  auto sin = at::sin(theta);
  auto lin = (1.0 - lambda) * fa + lambda * fb;
  auto sph = (at::sin((1.0 - lambda) * theta) * fa + at::sin(lambda * theta) * fb) / sin.clamp_min(1e-12);
  auto out = at::where(sin > 1e-6, sph, lin);
  return out.to(a.scalar_type()).reshape(a.sizes());
}

Denoiser classifier_free_guidance(Denoiser model, double w, int64_t null_label, bool learned_variance) {
  return [model = std::move(model), w, null_label, learned_variance](const at::Tensor& x, const at::Tensor& t,
                                                                     const at::Tensor& y) {
    if (!y.defined()) throw InvalidArgument("classifier-free guidance needs class labels: give a class", "class");
    if (w == 0.0) return model(x, t, y);
    auto null = at::full_like(y, null_label);
    auto out = model(at::cat({x, x}), at::cat({t, t}), at::cat({y, null}));
    auto halves = out.chunk(2, 0);
    const auto& cond = halves[0];
    const auto& uncond = halves[1];
    if (!learned_variance) return (1.0 + w) * cond - w * uncond;
    auto c = cond.chunk(2, 1), u = uncond.chunk(2, 1);
    return at::cat({(1.0 + w) * c[0] - w * u[0], c[1]}, 1);
  };
}

at::Tensor repaint_sample(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& known,
                          const at::Tensor& mask_in, const at::Tensor& x_T, at::Generator gen,
                          const RepaintOptions& ro, const SampleOptions& opts) {
  check_start(x_T, "x_T");
  if (ro.jump < 1) throw InvalidArgument("jump must be at least 1 (the number of steps RePaint goes back in time at once)", "jump");
  if (ro.resample < 1) throw InvalidArgument("resample must be at least 1 (how often RePaint repeats each jump)", "resample");
  if (!known.defined() || !known.sizes().equals(x_T.sizes()))
    throw InvalidArgument("the known image must have the shape of x_T, " + std::string(c10::str(x_T.sizes())), "image");
  c10::InferenceMode guard;
  at::Tensor mask;
  try {
    mask = mask_in.to(x_T.dtype()).expand(x_T.sizes());
  } catch (const c10::Error&) {
    throw InvalidArgument("the mask of shape " + std::string(c10::str(mask_in.sizes())) + " does not fit the images " +
                              std::string(c10::str(x_T.sizes())),
                          "mask");
  }
  const int64_t T = diffusion.num_timesteps();
  const auto& ac = diffusion.alphas_cumprod();
  const auto& betas = diffusion.betas();
  const auto known_f = known.to(x_T.dtype());
  // The known region at the noise level of index i of this process (i = -1: the image itself).
  auto known_at = [&](int64_t i) {
    if (i < 0) return known_f;
    return std::sqrt(ac[i]) * known_f + std::sqrt(1.0 - ac[i]) * noise_like(x_T, gen);
  };
  int64_t total = 0;  // reverse steps, for progress
  for (int64_t top = T - 1; top >= 0; top -= ro.jump) {
    const int64_t len = std::min(ro.jump, top + 1);
    total += len * (top - len + 1 > 0 ? ro.resample : 1);
  }
  int64_t done = 0;
  at::Tensor x = x_T.clone();
  for (int64_t top = T - 1; top >= 0; top -= ro.jump) {
    const int64_t len = std::min(ro.jump, top + 1), bottom = top - len + 1;
    // The last stretch (down to x_0) is run once: there is nothing left to harmonise after it.
    const int64_t passes = bottom > 0 ? ro.resample : 1;
    for (int64_t pass = 0; pass < passes; ++pass) {
      for (int64_t i = top; i >= bottom; --i) {
        auto t = step_t(i, x);
        auto p = diffusion.p_mean_variance(model, x, t, opts.y, opts.clip_denoised);
        if (opts.mean_guidance) p.mean = p.mean + p.variance * opts.mean_guidance(x, diffusion.model_timesteps(t), opts.y);
        auto unknown = i > 0 ? p.mean + (0.5 * p.log_variance).exp() * noise_like(x, gen) : p.mean;
        x = mask * known_at(i - 1) + (1 - mask) * unknown;
        if (opts.on_step && pass + 1 == passes) opts.on_step(i, x, p.pred_x0);
        if (opts.progress) opts.progress(++done, total);
      }
      if (pass + 1 < passes) {
        // Back up the stretch: x_i → x_{i+1} ~ N(√(1-β_{i+1}) x_i, β_{i+1} I), from x_{bottom-1} to x_top.
        for (int64_t i = bottom; i <= top; ++i) x = std::sqrt(1.0 - betas[i]) * x + std::sqrt(betas[i]) * noise_like(x, gen);
      }
    }
  }
  return x;
}

}  // namespace ddpm

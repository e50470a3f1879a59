// The samplers by name: what each is called, its parameters and defaults (steps, spacing per schedule), and one
// entry point that runs any of them from a spec. Front ends (the CLI, the server, a user's program) bind their
// flags or requests to a SamplerSpec and list what sampler_registry() says.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "ddpm/diffusion_config.h"
#include "ddpm/samplers.h"

namespace ddpm {

struct SamplerParam {
  std::string name;           ///< the SamplerSpec field: "eta", "order", "langevin_steps", "langevin_scale"
  std::string default_value;  ///< as text
  std::string help;
};

struct SamplerInfo {
  std::string name;  ///< "ddpm", "ddim", "dpm++", "langevin"
  std::string help;
  bool stochastic;   ///< draws noise at every step (ddim: unless η = 0)
  std::vector<SamplerParam> params;
  /// Steps when none are given: T for ddpm, 50 for ddim, 20 for dpm++, 100 noise levels for langevin (each ≤ T).
  int64_t default_steps(int64_t T) const;
  /// Spacing when none is given: "logsnr" for dpm++ and langevin ("trailing" on the cosine schedule, whose ᾱ_T is
  /// nearly 0 and where log-SNR steps crowd the noisy end; docs/RESULTS.md), "ddim" otherwise.
  std::string default_spacing(const DiffusionConfig& d) const;
  /// Network calls per step (langevin: its steps per level).
  int64_t calls_per_step = 1;
};

/// Every sampler, in the order front ends list them.
const std::vector<SamplerInfo>& sampler_registry();
std::vector<std::string> sampler_names();
/// Throws InvalidArgument "unknown sampler 'x' (choose ddpm, ddim, dpm++ or langevin)".
const SamplerInfo& find_sampler(const std::string& name);

/// A sampler run as a user asks for it; unset steps and spacing take the sampler's defaults for the model.
struct SamplerSpec {
  std::string name = "ddpm";
  std::optional<int64_t> steps;
  std::string spacing;       ///< empty = the sampler's default
  double eta = 0.0;          ///< ddim
  int order = 2;             ///< dpm++: 2 (2M) or 1 (= DDIM η = 0)
  LangevinOptions langevin;  ///< langevin

  /// Throws InvalidArgument naming the field at fault (eta, order, langevin_steps, langevin_scale, steps).
  void validate() const;
  /// Throws InvalidArgument unless the name is one of `allowed`.
  void require_one_of(const std::vector<std::string>& allowed) const;
  int64_t steps_for(const DiffusionConfig& d) const;
  std::string spacing_for(const DiffusionConfig& d) const;
  /// The kept timesteps of the full process (ascending), steps_for(d) of them chosen by spacing_for(d).
  std::vector<int64_t> timesteps(const DiffusionConfig& d) const;
  /// The respaced process the sampler runs over.
  GaussianDiffusion process(const DiffusionConfig& d) const;
  /// Network calls of one run (for progress bars).
  int64_t model_calls(const DiffusionConfig& d) const;
};

/// Runs the sampler of `spec` over `process` (already respaced, e.g. spec.process(config), or a process of the
/// caller's own such as timesteps up to a start t) from x_T.
at::Tensor run_sampler(const SamplerSpec& spec, const GaussianDiffusion& process, const Denoiser& model,
                       const at::Tensor& x_T, at::Generator gen, const SampleOptions& opts = {});

/// spec.validate(), then run_sampler over spec.process(config).
at::Tensor sample(const SamplerSpec& spec, const DiffusionConfig& config, const Denoiser& model,
                  const at::Tensor& x_T, at::Generator gen, const SampleOptions& opts = {});

}  // namespace ddpm

#include "ddpm/sampler_registry.h"

#include <algorithm>

#include "ddpm/errors.h"
#include "ddpm/names.h"

namespace ddpm {

int64_t SamplerInfo::default_steps(int64_t T) const {
  const int64_t n = name == "ddim" ? 50 : name == "dpm++" ? 20 : name == "langevin" ? 100 : T;
  return std::min(n, T);
}

std::string SamplerInfo::default_spacing(const DiffusionConfig& d) const {
  if (name == "dpm++" || name == "langevin") return d.schedule == BetaSchedule::cosine ? "trailing" : "logsnr";
  return "ddim";
}

const std::vector<SamplerInfo>& sampler_registry() {
  static const std::vector<SamplerInfo> r = [] {
    std::vector<SamplerInfo> v;
    v.push_back({"ddpm", "ancestral sampling (DDPM Algorithm 2), every step of the process by default", true, {}});
    v.push_back({"ddim", "DDIM (eq. 12): deterministic at η = 0, ≈ DDPM at η = 1; 50 steps by default", true,
                 {{"eta", "0", "stochasticity η ≥ 0"}}});
    v.push_back({"dpm++", "DPM-Solver++ (multistep 2M) on a log-SNR grid, 20 steps by default", false,
                 {{"order", "2", "2 (2M) or 1 (= DDIM with η = 0)"}}});
    v.push_back({"langevin", "annealed Langevin dynamics (Song & Ermon) over 100 noise levels by default", true,
                 {{"langevin_steps", "5", "Langevin steps per noise level"},
                  {"langevin_scale", "0.5", "step δ: α_t = δ (1-ᾱ_t)/ᾱ_t"}}});
    return v;
  }();
  return r;
}

std::vector<std::string> sampler_names() {
  std::vector<std::string> out;
  for (const auto& s : sampler_registry()) out.push_back(s.name);
  return out;
}

const SamplerInfo& find_sampler(const std::string& name) {
  for (const auto& s : sampler_registry())
    if (s.name == name) return s;
  throw InvalidArgument("unknown sampler '" + name + "' (choose " + choice_list(sampler_names()) + ")");
}

void SamplerSpec::validate() const {
  find_sampler(name);
  if (!(eta >= 0.0)) throw InvalidArgument("eta must be ≥ 0 (got " + std::to_string(eta) + ")", "eta");
  if (order != 1 && order != 2)
    throw InvalidArgument("the DPM-Solver++ order must be 1 or 2 (got " + std::to_string(order) + ")", "order");
  if (langevin.steps_per_level < 1)
    throw InvalidArgument("Langevin needs at least one step per level", "langevin_steps");
  if (!(langevin.step_scale > 0.0)) throw InvalidArgument("the Langevin step scale must be > 0", "langevin_scale");
  if (steps && *steps < 1)
    throw InvalidArgument("the number of sampling steps must be at least 1 (got " + std::to_string(*steps) + ")",
                          "steps");
}

void SamplerSpec::require_one_of(const std::vector<std::string>& allowed) const {
  if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
    throw InvalidArgument("unknown sampler '" + name + "' (choose " + choice_list(allowed) + ")");
}

int64_t SamplerSpec::steps_for(const DiffusionConfig& d) const {
  return steps.value_or(find_sampler(name).default_steps(d.timesteps));
}

std::string SamplerSpec::spacing_for(const DiffusionConfig& d) const {
  return spacing.empty() ? find_sampler(name).default_spacing(d) : spacing;
}

std::vector<int64_t> SamplerSpec::timesteps(const DiffusionConfig& d) const {
  const std::string sp = spacing_for(d);
  return respaced_timesteps(d.timesteps, steps_for(d), sp, sp == "logsnr" ? d.alphas_cumprod() : std::vector<double>{});
}

GaussianDiffusion SamplerSpec::process(const DiffusionConfig& d) const { return d.respaced(timesteps(d)); }

int64_t SamplerSpec::model_calls(const DiffusionConfig& d) const {
  return steps_for(d) * (name == "langevin" ? langevin.steps_per_level : 1);
}

at::Tensor run_sampler(const SamplerSpec& spec, const GaussianDiffusion& d, const Denoiser& model,
                       const at::Tensor& x_T, at::Generator gen, const SampleOptions& o) {
  const std::string& n = find_sampler(spec.name).name;
  if (n == "ddpm") return ddpm_sample(d, model, x_T, gen, o);
  if (n == "ddim") return ddim_sample(d, model, x_T, spec.eta, gen, o);
  if (n == "dpm++") return dpm_solver_sample(d, model, x_T, spec.order, o);
  return langevin_sample(d, model, x_T, gen, spec.langevin, o);
}

at::Tensor sample(const SamplerSpec& spec, const DiffusionConfig& config, const Denoiser& model,
                  const at::Tensor& x_T, at::Generator gen, const SampleOptions& opts) {
  spec.validate();
  return run_sampler(spec, spec.process(config), model, x_T, gen, opts);
}

}  // namespace ddpm

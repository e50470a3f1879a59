// The diffusion settings that travel with a model (SPEC names and defaults): schedule, T, what the network
// predicts and the reverse variance. Training-only settings (loss, timestep sampling) live in TrainConfig.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "ddpm/diffusion.h"

namespace ddpm {

struct DiffusionConfig {
  BetaSchedule schedule = BetaSchedule::linear;
  int64_t timesteps = 1000;
  MeanType mean_type = MeanType::eps;
  VarType var_type = VarType::fixed_large;
  /// Explicit β_1..β_T (imported models whose schedule has no name here, e.g. diffusers' linear at T ≠ 1000, which
  /// does not scale with T); when given, `timesteps` equals their count and `schedule` is not used.
  std::vector<double> betas;

  /// Throws InvalidArgument (field "timesteps") when T < 1.
  void validate() const;
  /// ᾱ of the full schedule.
  std::vector<double> alphas_cumprod() const;
  /// β of the full schedule (the explicit ones, or the named schedule's).
  std::vector<double> beta_values() const;
  /// The full schedule as a Schedule (identity timestep map).
  Schedule full_schedule() const;
  /// The full (unrespaced) process.
  GaussianDiffusion make() const;
  /// The process respaced to the given kept timesteps (ascending, of the full schedule).
  GaussianDiffusion respaced(const std::vector<int64_t>& kept) const;
  /// The process respaced to `steps` steps chosen by `spacing` (respaced_timesteps: ddim, even, quadratic, logsnr,
  /// linspace, leading, trailing).
  GaussianDiffusion respaced(int64_t steps, const std::string& spacing) const;
  bool operator==(const DiffusionConfig& o) const {
    return schedule == o.schedule && timesteps == o.timesteps && mean_type == o.mean_type && var_type == o.var_type &&
           betas == o.betas;
  }
  bool operator!=(const DiffusionConfig& o) const { return !(*this == o); }
};

/// Names: {"schedule": "linear", "timesteps": 1000, "mean_type": "eps", "var_type": "fixed_large"}, plus "betas"
/// (an array) only when explicit betas are set. Reading
/// ignores other keys (checkpoints before this version also stored "loss" and "timestep_sampler" here) and fills
/// missing ones with the defaults; a bad name throws InvalidArgument.
void to_json(nlohmann::json& j, const DiffusionConfig& c);
void from_json(const nlohmann::json& j, DiffusionConfig& c);

/// Settings asked for by a user where a model brings its own: each one given must agree with the model's.
struct DiffusionOverrides {
  std::optional<BetaSchedule> schedule;
  std::optional<int64_t> timesteps;
  std::optional<MeanType> mean_type;
  std::optional<VarType> var_type;
  /// `base` with every given setting replaced (for models that carry no settings: exact denoisers, TorchScript).
  DiffusionConfig over(DiffusionConfig base) const;
  /// `stored`, after checking that no given setting contradicts it; throws ConfigMismatch naming the field:
  /// "SOURCE was trained with schedule linear; it cannot be used with schedule cosine".
  DiffusionConfig check_against(const DiffusionConfig& stored, const std::string& source) const;
};

}  // namespace ddpm

#include "ddpm/diffusion_config.h"

#include "ddpm/errors.h"

namespace ddpm {

void DiffusionConfig::validate() const {
  if (timesteps < 1)
    throw InvalidArgument("timesteps must be at least 1 (got " + std::to_string(timesteps) + ")", "timesteps");
  if (!betas.empty()) {
    if (static_cast<int64_t>(betas.size()) != timesteps)
      throw InvalidArgument("explicit betas: " + std::to_string(betas.size()) + " values for " +
                                std::to_string(timesteps) + " timesteps",
                            "betas");
    for (double b : betas)
      if (!(b > 0 && b < 1)) throw InvalidArgument("explicit betas must lie in (0, 1)", "betas");
  }
}

std::vector<double> DiffusionConfig::beta_values() const {
  validate();
  return betas.empty() ? make_betas(schedule, timesteps) : betas;
}

Schedule DiffusionConfig::full_schedule() const {
  if (betas.empty()) {
    validate();
    return Schedule::make(schedule, timesteps);
  }
  Schedule s;
  s.betas = beta_values();
  s.timestep_map.resize(s.betas.size());
  for (size_t i = 0; i < s.betas.size(); ++i) s.timestep_map[i] = static_cast<int64_t>(i);
  return s;
}

std::vector<double> DiffusionConfig::alphas_cumprod() const { return ddpm::alphas_cumprod(beta_values()); }

GaussianDiffusion DiffusionConfig::make() const {
  return GaussianDiffusion(full_schedule(), mean_type, var_type);
}

GaussianDiffusion DiffusionConfig::respaced(const std::vector<int64_t>& kept) const {
  return GaussianDiffusion(full_schedule().respace(kept), mean_type, var_type);
}

GaussianDiffusion DiffusionConfig::respaced(int64_t steps, const std::string& spacing) const {
  const auto full = full_schedule();
  const auto kept = respaced_timesteps(timesteps, steps, spacing,
                                       spacing == "logsnr" ? ddpm::alphas_cumprod(full.betas) : std::vector<double>{});
  return GaussianDiffusion(full.respace(kept), mean_type, var_type);
}

void to_json(nlohmann::json& j, const DiffusionConfig& c) {
  j = {{"schedule", name_of(c.schedule)},
       {"timesteps", c.timesteps},
       {"mean_type", name_of(c.mean_type)},
       {"var_type", name_of(c.var_type)}};
  if (!c.betas.empty()) j["betas"] = c.betas;
}

void from_json(const nlohmann::json& j, DiffusionConfig& c) {
  c = DiffusionConfig();
  if (j.contains("schedule")) c.schedule = parse_name<BetaSchedule>(j.at("schedule").get<std::string>());
  if (j.contains("timesteps")) c.timesteps = j.at("timesteps").get<int64_t>();
  if (j.contains("mean_type")) c.mean_type = parse_name<MeanType>(j.at("mean_type").get<std::string>());
  if (j.contains("var_type")) c.var_type = parse_name<VarType>(j.at("var_type").get<std::string>());
  if (j.contains("betas")) c.betas = j.at("betas").get<std::vector<double>>();
  c.validate();
}

DiffusionConfig DiffusionOverrides::over(DiffusionConfig c) const {
  if (schedule) c.schedule = *schedule;
  if (timesteps) c.timesteps = *timesteps;
  if (mean_type) c.mean_type = *mean_type;
  if (var_type) c.var_type = *var_type;
  c.validate();
  return c;
}

DiffusionConfig DiffusionOverrides::check_against(const DiffusionConfig& s, const std::string& source) const {
  auto refuse = [&](const char* field, const std::string& stored, const std::string& given) {
    throw ConfigMismatch(source + " was trained with " + field + " " + stored + "; it cannot be used with " + field +
                             " " + given,
                         field);
  };
  if (timesteps && *timesteps < 1) over(s);  // the range error first
  if (schedule && *schedule != s.schedule) refuse("schedule", name_of(s.schedule), name_of(*schedule));
  if (timesteps && *timesteps != s.timesteps)
    refuse("timesteps", std::to_string(s.timesteps), std::to_string(*timesteps));
  if (mean_type && *mean_type != s.mean_type) refuse("mean_type", name_of(s.mean_type), name_of(*mean_type));
  if (var_type && *var_type != s.var_type) refuse("var_type", name_of(s.var_type), name_of(*var_type));
  return s;
}

}  // namespace ddpm

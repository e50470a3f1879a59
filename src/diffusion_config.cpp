#include "ddpm/diffusion_config.h"

#include "ddpm/errors.h"

namespace ddpm {

void DiffusionConfig::validate() const {
  if (timesteps < 1)
    throw InvalidArgument("timesteps must be at least 1 (got " + std::to_string(timesteps) + ")", "timesteps");
}

std::vector<double> DiffusionConfig::alphas_cumprod() const {
  validate();
  return ddpm::alphas_cumprod(make_betas(schedule, timesteps));
}

GaussianDiffusion DiffusionConfig::make() const {
  validate();
  return GaussianDiffusion(Schedule::make(schedule, timesteps), mean_type, var_type);
}

GaussianDiffusion DiffusionConfig::respaced(const std::vector<int64_t>& kept) const {
  validate();
  return GaussianDiffusion(Schedule::make(schedule, timesteps).respace(kept), mean_type, var_type);
}

GaussianDiffusion DiffusionConfig::respaced(int64_t steps, const std::string& spacing) const {
  validate();
  const auto full = Schedule::make(schedule, timesteps);
  const auto kept = respaced_timesteps(timesteps, steps, spacing,
                                       spacing == "logsnr" ? ddpm::alphas_cumprod(full.betas) : std::vector<double>{});
  return GaussianDiffusion(full.respace(kept), mean_type, var_type);
}

void to_json(nlohmann::json& j, const DiffusionConfig& c) {
  j = {{"schedule", name_of(c.schedule)},
       {"timesteps", c.timesteps},
       {"mean_type", name_of(c.mean_type)},
       {"var_type", name_of(c.var_type)}};
}

void from_json(const nlohmann::json& j, DiffusionConfig& c) {
  c = DiffusionConfig();
  if (j.contains("schedule")) c.schedule = parse_name<BetaSchedule>(j.at("schedule").get<std::string>());
  if (j.contains("timesteps")) c.timesteps = j.at("timesteps").get<int64_t>();
  if (j.contains("mean_type")) c.mean_type = parse_name<MeanType>(j.at("mean_type").get<std::string>());
  if (j.contains("var_type")) c.var_type = parse_name<VarType>(j.at("var_type").get<std::string>());
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

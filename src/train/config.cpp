#include "ddpm/train/config.h"

#include "ddpm/errors.h"
#include "ddpm/timestep_sampler.h"

namespace ddpm {

void DiffusionConfig::validate() const {
  parse_beta_schedule(schedule);
  if (timesteps < 1) throw InvalidArgument("--timesteps must be at least 1 (got " + std::to_string(timesteps) + ")");
  parse_mean_type(mean_type);
  parse_var_type(var_type);
  parse_loss_type(loss);
  check_timestep_sampler_name(timestep_sampler);
}

GaussianDiffusion DiffusionConfig::make() const {
  validate();
  return GaussianDiffusion(Schedule::make(parse_beta_schedule(schedule), timesteps), parse_mean_type(mean_type),
                           parse_var_type(var_type));
}

GaussianDiffusion DiffusionConfig::make_respaced(const std::vector<int64_t>& kept) const {
  validate();
  return GaussianDiffusion(Schedule::make(parse_beta_schedule(schedule), timesteps).respace(kept),
                           parse_mean_type(mean_type), parse_var_type(var_type));
}

nlohmann::json DiffusionConfig::to_json() const {
  return {{"schedule", schedule},   {"timesteps", timesteps}, {"mean_type", mean_type},
          {"var_type", var_type},   {"loss", loss},           {"timestep_sampler", timestep_sampler}};
}

DiffusionConfig DiffusionConfig::from_json(const nlohmann::json& j) {
  DiffusionConfig c;
  c.schedule = j.value("schedule", c.schedule);
  c.timesteps = j.value("timesteps", c.timesteps);
  c.mean_type = j.value("mean_type", c.mean_type);
  c.var_type = j.value("var_type", c.var_type);
  c.loss = j.value("loss", c.loss);
  c.timestep_sampler = j.value("timestep_sampler", c.timestep_sampler);
  c.validate();
  return c;
}

void TrainConfig::validate() const {
  if (steps < 1) throw InvalidArgument("--steps must be at least 1");
  if (batch < 1) throw InvalidArgument("--batch must be at least 1");
  if (!(lr > 0)) throw InvalidArgument("--lr must be positive");
  if (!(ema_decay >= 0 && ema_decay < 1)) throw InvalidArgument("--ema-decay must be in [0, 1)");
  if (!(label_dropout >= 0 && label_dropout <= 1)) throw InvalidArgument("--label-dropout must be in [0, 1]");
  if (warmup < 0) throw InvalidArgument("--warmup must be ≥ 0");
}

nlohmann::json TrainConfig::to_json() const {
  return {{"steps", steps},         {"batch", batch},           {"lr", lr},
          {"adam_beta1", adam_beta1}, {"adam_beta2", adam_beta2}, {"adam_eps", adam_eps},
          {"warmup", warmup},       {"grad_clip", grad_clip},   {"ema_decay", ema_decay},
          {"label_dropout", label_dropout}, {"seed", seed}, {"random_flip", random_flip}};
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  TrainConfig c;
  c.steps = j.value("steps", c.steps);
  c.batch = j.value("batch", c.batch);
  c.lr = j.value("lr", c.lr);
  c.adam_beta1 = j.value("adam_beta1", c.adam_beta1);
  c.adam_beta2 = j.value("adam_beta2", c.adam_beta2);
  c.adam_eps = j.value("adam_eps", c.adam_eps);
  c.warmup = j.value("warmup", c.warmup);
  c.grad_clip = j.value("grad_clip", c.grad_clip);
  c.ema_decay = j.value("ema_decay", c.ema_decay);
  c.label_dropout = j.value("label_dropout", c.label_dropout);
  c.seed = j.value("seed", c.seed);
  c.random_flip = j.value("random_flip", c.random_flip);
  return c;
}

}  // namespace ddpm

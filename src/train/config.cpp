#include "ddpm/train/config.h"

#include "ddpm/errors.h"
#include "ddpm/timestep_sampler.h"

namespace ddpm {

void TrainConfig::validate() const {
  if (steps < 1) throw InvalidArgument("steps must be at least 1", "steps");
  if (batch < 1) throw InvalidArgument("batch must be at least 1", "batch");
  if (!(lr > 0)) throw InvalidArgument("lr must be positive", "lr");
  if (!(ema_decay >= 0 && ema_decay < 1)) throw InvalidArgument("ema_decay must be in [0, 1)", "ema_decay");
  if (!(label_dropout >= 0 && label_dropout <= 1))
    throw InvalidArgument("label_dropout must be in [0, 1]", "label_dropout");
  if (warmup < 0) throw InvalidArgument("warmup must be ≥ 0", "warmup");
  check_timestep_sampler_name(timestep_sampler);
}

TrainConfig train_config_from_meta(const nlohmann::json& meta) {
  nlohmann::json j = meta.value("train", nlohmann::json::object());
  const nlohmann::json d = meta.value("diffusion", nlohmann::json::object());
  for (const char* key : {"loss", "timestep_sampler"})
    if (!j.contains(key) && d.contains(key)) j[key] = d[key];
  return j.get<TrainConfig>();
}

}  // namespace ddpm

// The training hyperparameters that travel with a checkpoint (the diffusion settings are ddpm/diffusion_config.h).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "ddpm/diffusion_config.h"
#include "ddpm/losses.h"

namespace ddpm {

struct TrainConfig {
  int64_t steps = 5000;
  int64_t batch = 256;
  double lr = 1e-3;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  int64_t warmup = 0;         ///< linear learning-rate warm-up steps (DDPM: 5000)
  double grad_clip = 1.0;     ///< global gradient-norm clip; ≤ 0 disables
  double ema_decay = 0.995;   ///< EMA of the weights; effective decay min(decay, (1+n)/(10+n))
  double label_dropout = 0.0; ///< probability of replacing a label by the null label (classifier-free guidance)
  uint64_t seed = 0;
  bool random_flip = false;   ///< flip images horizontally with probability 1/2 (4-D data only)
  LossType loss = LossType::mse;
  std::string timestep_sampler = "uniform";  ///< uniform | loss-second-moment

  /// Throws InvalidArgument naming the field at fault.
  void validate() const;
};

// Every field by its name; missing keys keep their defaults.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TrainConfig, steps, batch, lr, adam_beta1, adam_beta2, adam_eps,
                                                warmup, grad_clip, ema_decay, label_dropout, seed, random_flip, loss,
                                                timestep_sampler)

/// The training settings of checkpoint metadata. Checkpoints before the typed settings stored the loss and the
/// timestep sampler with the diffusion settings; they are read from there when "train" lacks them.
TrainConfig train_config_from_meta(const nlohmann::json& meta);

}  // namespace ddpm

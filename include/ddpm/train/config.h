// Configurations that travel with a checkpoint: the diffusion settings and the training hyperparameters.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "ddpm/diffusion.h"
#include "ddpm/losses.h"

namespace ddpm {

/// The diffusion settings, spelled as on the command line (SPEC names and defaults).
struct DiffusionConfig {
  std::string schedule = "linear";
  int64_t timesteps = 1000;
  std::string mean_type = "eps";
  std::string var_type = "fixed_large";
  std::string loss = "mse";
  std::string timestep_sampler = "uniform";

  /// Throws InvalidArgument naming the first bad setting.
  void validate() const;
  /// The full (unrespaced) process.
  GaussianDiffusion make() const;
  /// The process respaced to the given kept timesteps.
  GaussianDiffusion make_respaced(const std::vector<int64_t>& kept) const;
  nlohmann::json to_json() const;
  static DiffusionConfig from_json(const nlohmann::json& j);
};

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

  void validate() const;
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);
};

}  // namespace ddpm

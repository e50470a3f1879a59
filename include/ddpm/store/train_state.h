// A training run's complete state as named tensors plus JSON settings: what a Trainer exposes and a checkpoint holds.
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/diffusion_config.h"

namespace ddpm {

/// Everything needed to resume exactly: named tensors and JSON settings ("network", "diffusion", "train", "step",
/// and whatever the front end adds: "data", "command", "resumed").
struct TrainState {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  nlohmann::json meta;
  /// The tensor named `name`; throws FormatError when absent.
  const at::Tensor& at(const std::string& name) const;
};

/// The diffusion settings of checkpoint metadata; throws FormatError naming `path` when they are bad.
DiffusionConfig diffusion_from_meta(const nlohmann::json& meta, const std::string& path);

}  // namespace ddpm

// Checkpoints: one safetensors file holding the EMA and raw weights, the optimiser and RNG state, and as string
// metadata the network, diffusion and training configuration (JSON), so Python's safetensors reads it unchanged.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "ddpm/diffusion_config.h"
#include "ddpm/models/network.h"
#include "ddpm/store/train_state.h"

namespace ddpm {

/// Writes the trainer state atomically. `extra` (e.g. {"command": ..., "data": ...}) is stored as metadata too.
void save_checkpoint(const std::string& path, const TrainState& state, const nlohmann::json& extra = {});
/// Reads a checkpoint back as a trainer state; throws IoError / FormatError naming the path.
TrainState load_train_state(const std::string& path);

/// Writes only what sampling needs: the EMA weights and the metadata (no raw weights, optimiser or RNG state), as
/// models are shipped. load_model() reads it; --resume cannot. With `raw`, the raw (non-EMA) weights are written in
/// the EMA's place (metadata "contents": "raw-only"), to evaluate or ship them as the model.
void save_model_only(const std::string& checkpoint_path, const std::string& out_path, bool raw = false);

struct LoadedModel {
  std::shared_ptr<Network> network;  ///< in eval mode
  DiffusionConfig diffusion;
  nlohmann::json meta;               ///< all metadata, JSON values parsed
};

/// Loads the network of a checkpoint (the EMA weights unless `ema` is false).
LoadedModel load_model(const std::string& path, bool ema = true);

}  // namespace ddpm

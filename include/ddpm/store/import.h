// Importers of published diffusion models into this project's U-Net: diffusers UNet2DModel pipelines (the DDPM
// paper's google/ddpm-* models, models trained with diffusers) and openai/improved-diffusion .pt checkpoints.
// Every setting of the source is either honoured exactly or refused with one line naming it; the result is an
// ordinary checkpoint (EMA weights only) whose metadata records where it came from.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ddpm/diffusion_config.h"
#include "ddpm/models/unet.h"

namespace ddpm {

struct ImportedModel {
  std::shared_ptr<UNet> network;  ///< the weights loaded, in eval mode
  DiffusionConfig diffusion;
  /// {"format": "diffusers" | "improved-diffusion", "path": ..., "config": the source's settings as read,
  ///  "weights": the file read, "clip_sample": ..., "notes": [...]}.
  nlohmann::json source;
};

/// DIR is a diffusers pipeline folder (model_index.json, unet/, scheduler/), a flat hub folder (config.json,
/// diffusion_pytorch_model.{safetensors,bin}, scheduler_config.json), a bare unet/ folder, or a Hugging Face cache
/// directory (models--ORG--NAME, or one of its snapshots/HASH). Weights: .safetensors, then .bin (torch.save), then
/// .fp16.safetensors (cast to float32). Throws IoError, FormatError, or InvalidArgument (field = the config key).
ImportedModel import_diffusers(const std::string& dir);

/// FILE is an improved-diffusion state_dict (.pt). `flags` is the flag string of improved-diffusion's README
/// ("--image_size 32 --num_channels 128 --learn_sigma True ..."); flags not given take improved-diffusion's own
/// defaults (script_util.model_and_diffusion_defaults). The network's structure is read from the weights and a given
/// flag that contradicts them is refused with one line naming the flag and the tensor.
ImportedModel import_improved(const std::string& file, const std::string& flags);

/// Writes the model as an EMA-only checkpoint of this project; `command` is recorded.
void save_imported(const ImportedModel& m, const std::string& path, const std::string& command);

}  // namespace ddpm

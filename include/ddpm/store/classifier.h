// The evaluation classifier's file: safetensors with its weights, and its options, training command and accuracy as
// metadata.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "ddpm/diffusion_config.h"
#include "ddpm/models/classifier.h"
#include "ddpm/models/noisy_classifier.h"

namespace ddpm {

/// safetensors with the options, the training command and accuracy as metadata; throws IoError / FormatError.
void save_classifier(const std::string& path, Classifier& net, const nlohmann::json& extra_meta);
std::shared_ptr<Classifier> load_classifier(const std::string& path, nlohmann::json* meta = nullptr);

/// A noise-aware classifier's file: its weights, its options ("network"), the diffusion settings it was trained
/// under ("diffusion") and `extra_meta` (command, accuracy per t band). Throws IoError.
void save_noisy_classifier(const std::string& path, NoisyClassifierNet& net, const DiffusionConfig& diffusion,
                           const nlohmann::json& extra_meta);
struct LoadedNoisyClassifier {
  std::shared_ptr<NoisyClassifierNet> net;  ///< in eval mode
  DiffusionConfig diffusion;
  nlohmann::json meta;  ///< every metadata entry, JSON-parsed where it parses
};
/// Throws IoError, or FormatError when the file is not a noisy classifier (naming the command that makes one).
LoadedNoisyClassifier load_noisy_classifier(const std::string& path);

}  // namespace ddpm

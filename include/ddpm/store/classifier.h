// The evaluation classifier's file: safetensors with its weights, and its options, training command and accuracy as
// metadata.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "ddpm/models/classifier.h"

namespace ddpm {

/// safetensors with the options, the training command and accuracy as metadata; throws IoError / FormatError.
void save_classifier(const std::string& path, Classifier& net, const nlohmann::json& extra_meta);
std::shared_ptr<Classifier> load_classifier(const std::string& path, nlohmann::json* meta = nullptr);

}  // namespace ddpm

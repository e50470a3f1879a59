// open_model: every kind of model a user can name, as one type — a denoiser with its diffusion settings, item
// shape and classes. A checkpoint of this project, a TorchScript file with its JSON sidecar, or an exact denoiser
// (gaussian:mean=M,std=S,dim=D, gmm:FILE.json, gmm:8gaussians).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/diffusion_config.h"
#include "ddpm/guidance.h"
#include "ddpm/mixture.h"
#include "ddpm/models/network.h"

namespace ddpm {

struct Model {
  enum class Kind { checkpoint, torchscript, exact };
  Kind kind = Kind::checkpoint;
  std::string spec;         ///< as given to open_model
  std::string description;  ///< for messages: the path, or "exact denoiser of SPEC"
  Denoiser denoiser;        ///< evaluated as is: networks are in eval mode
  DiffusionConfig diffusion;
  int64_t num_classes = 0;  ///< 0 if unconditional
  int64_t null_label = 0;   ///< the label of an unconditional call (num_classes for this project's networks)
  std::vector<int64_t> item_shape;
  std::shared_ptr<Network> network;        ///< checkpoints only
  nlohmann::json meta;                     ///< checkpoint metadata or TorchScript sidecar; {} for exact denoisers
  std::optional<GaussianMixture> mixture;  ///< exact denoisers only

  bool is_image() const { return item_shape.size() == 3; }
  /// [n, item_shape...].
  std::vector<int64_t> batch_shape(int64_t n) const;
  /// Labels for n items: all `klass` if given (checked against the classes), else `data_labels` when they fit,
  /// else the null label; undefined for an unconditional model (where a class is refused, field "class").
  at::Tensor labels(int64_t n, const std::optional<int64_t>& klass, const at::Tensor& data_labels = {}) const;
  /// The denoiser under classifier-free guidance of weight w (w = 0: the denoiser itself). Needs classes.
  Denoiser guided(double w) const;
};

struct OpenOptions {
  DiffusionOverrides diffusion;  ///< checkpoints refuse contradicting settings; other models take them
  AttentionPrecision attention = AttentionPrecision::fp32;
  ComputePrecision compute = ComputePrecision::fp32;  ///< networks of this project and imports (not TorchScript)
};

/// Opens CHECKPOINT.safetensors | MODEL.pt / .pth / .ts / torchscript:PATH (settings from MODEL.json beside it and
/// the overrides; checked by one probe call) | gaussian:mean=M,std=S,dim=D | gmm:FILE.json | gmm:NAME (a toy set) |
/// diffusers:DIR | improved:FILE.pt --flag value ... (published models imported on the fly, store/import.h).
/// Throws IoError, FormatError, InvalidArgument or ConfigMismatch with a message naming the spec.
Model open_model(const std::string& spec, const OpenOptions& options = {});

struct OpenedClassifier {
  NoisyClassifier classifier;  ///< (x_t, t) → logits
  int64_t num_classes = 0;
  std::string description;
};

/// A noise-aware classifier for classifier guidance of `model`: "exact" is the exact noisy classifier of an exact
/// mixture model (gmm:…, gaussian:…), in closed form; a path is a file of `ddpm classifier train --noisy`, which must
/// have been trained under the model's noise schedule and take its item shape (else ConfigMismatch). Throws
/// InvalidArgument naming the field "classifier", IoError or FormatError.
OpenedClassifier open_noisy_classifier(const std::string& spec, const Model& model);

/// True for torchscript:PATH and paths ending in .pt, .pth or .ts.
bool is_torchscript_spec(const std::string& spec);
/// MODEL.pt → MODEL.json.
std::string torchscript_sidecar(const std::string& path);

}  // namespace ddpm

// The models a server offers: every model file directly inside one folder (no recursion), each known by an id
// (its file name without the extension, ^[A-Za-z0-9._-]{1,64}$), never by a path; loaded on demand into a small
// cache of recently used models.
#pragma once

#include <list>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ddpm/guidance.h"
#include "ddpm/store/model.h"

namespace ddpm::serve {

struct ModelEntry {
  std::string id;
  std::string path;  ///< the folder as given plus the file name
  std::vector<int64_t> item_shape;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  ///< one per class (the data set's names, or "class K")
  int64_t timesteps = 0;
  DiffusionConfig diffusion;  ///< the model's process (for the samplers' defaults)
  bool guidance = false;  ///< trained with label dropout, so classifier-free guidance applies
  int64_t step = 0;       ///< training step of the weights
  std::string description;
  std::vector<std::string> classifiers;  ///< ids of the folder's noisy classifiers that can guide it
  /// As the API lists it (no path).
  nlohmann::json to_json() const;
};

/// A noise-aware classifier (`ddpm classifier train --noisy`) in the folder, for classifier guidance of the models
/// trained under the same process on items of its shape. Small, so it stays loaded.
struct ClassifierEntry {
  std::string id;
  std::string path;
  std::vector<int64_t> item_shape;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  ///< one per class (the data set's names, or "class K")
  std::vector<double> alphas_cumprod;    ///< the process it was trained under
  NoisyClassifier classifier;
  nlohmann::json to_json() const;
  /// Trained under `m`'s process (ᾱ equal to 1e-9) on items of its shape.
  bool fits(const ModelEntry& m) const;
};

/// True for ids of the form ^[A-Za-z0-9._-]{1,64}$ other than "." and "..".
bool valid_model_id(const std::string& id);

class Catalog {
 public:
  /// Opens every *.safetensors (and TorchScript file with its JSON sidecar) in `dir` once, to describe it; noisy
  /// classifiers are kept as classifiers(); other files that are not diffusion models (the FID classifier, a
  /// training state) are left out, with the reason in skipped().
  /// Throws IoError if `dir` is not a readable folder.
  static std::shared_ptr<Catalog> scan(const std::string& dir, size_t cache_size = 2);

  const std::vector<ModelEntry>& entries() const { return entries_; }
  const std::vector<ClassifierEntry>& classifiers() const { return classifiers_; }
  /// nullptr for an unknown (or malformed) id.
  const ClassifierEntry* find_classifier(const std::string& id) const;
  /// nullptr for an unknown (or malformed) id.
  const ModelEntry* find(const std::string& id) const;
  /// The opened model, from the cache or loaded now (the least recently used one leaves). Thread-safe.
  /// Throws InvalidArgument for an unknown id, or what open_model throws.
  std::shared_ptr<const Model> load(const std::string& id);
  const std::vector<std::pair<std::string, std::string>>& skipped() const { return skipped_; }

 private:
  std::vector<ModelEntry> entries_;
  std::vector<ClassifierEntry> classifiers_;
  std::vector<std::pair<std::string, std::string>> skipped_;
  size_t cache_size_ = 2;
  std::mutex mu_;
  std::list<std::pair<std::string, std::shared_ptr<const Model>>> cache_;  ///< most recent first
};

}  // namespace ddpm::serve

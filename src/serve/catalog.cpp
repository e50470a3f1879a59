#include "ddpm/serve/catalog.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/store/classifier.h"

namespace ddpm::serve {

namespace fs = std::filesystem;

bool valid_model_id(const std::string& id) {
  if (id.empty() || id.size() > 64 || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

nlohmann::json ModelEntry::to_json() const {
  return {{"id", id},           {"item_shape", item_shape}, {"num_classes", num_classes},
          {"class_names", class_names}, {"timesteps", timesteps}, {"guidance", guidance},
          {"step", step},       {"description", description}, {"classifiers", classifiers}};
}

nlohmann::json ClassifierEntry::to_json() const {
  return {{"id", id}, {"item_shape", item_shape}, {"num_classes", num_classes}, {"class_names", class_names}};
}

bool ClassifierEntry::fits(const ModelEntry& m) const {
  if (m.item_shape != item_shape) return false;
  const auto theirs = m.diffusion.alphas_cumprod();
  if (theirs.size() != alphas_cumprod.size()) return false;
  for (size_t i = 0; i < theirs.size(); ++i)
    if (std::abs(theirs[i] - alphas_cumprod[i]) > 1e-9 * (1 + theirs[i])) return false;
  return true;
}

std::shared_ptr<Catalog> Catalog::scan(const std::string& dir, size_t cache_size) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw IoError("the models folder '" + dir + "' does not exist or is not a folder (name the folder of your model "
                  "files as models_dir)",
                  "models_dir");
  auto c = std::make_shared<Catalog>();
  c->cache_size_ = std::max<size_t>(1, cache_size);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    const auto ext = e.path().extension().string();
    if (ext == ".safetensors" || ((ext == ".pt" || ext == ".ts") && fs::exists(torchscript_sidecar(e.path().string()))))
      files.push_back(e.path());
  }
  if (ec) throw IoError("cannot list the models folder '" + dir + "': " + ec.message());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const std::string id = f.stem().string(), path = (fs::path(dir) / f.filename()).string();
    if (!valid_model_id(id)) {
      c->skipped_.push_back({f.filename().string(), "its name is not a valid model id ([A-Za-z0-9._-], at most 64)"});
      continue;
    }
    if (c->find(id)) {
      c->skipped_.push_back({f.filename().string(), "another file has the same id '" + id + "'"});
      continue;
    }
    try {
      auto m = open_model(path);
      ModelEntry e;
      e.id = id;
      e.path = path;
      e.item_shape = m.item_shape;
      e.num_classes = m.num_classes;
      e.timesteps = m.diffusion.timesteps;
      e.diffusion = m.diffusion;
      e.step = m.meta.value("step", int64_t{0});
      const auto& train = m.meta.contains("train") ? m.meta["train"] : nlohmann::json::object();
      e.guidance = m.num_classes > 0 && train.value("label_dropout", 0.0) > 0.0;
      if (m.meta.contains("data") && m.meta["data"].is_object())
        e.class_names = known_class_names(m.meta["data"].value("spec", std::string()));
      if (static_cast<int64_t>(e.class_names.size()) != m.num_classes) {
        e.class_names.clear();
        for (int64_t k = 0; k < m.num_classes; ++k) e.class_names.push_back("class " + std::to_string(k));
      }
      e.description = std::to_string(m.network ? m.network->num_parameters() : 0) + " parameters";
      c->entries_.push_back(std::move(e));
    } catch (const std::exception& ex) {
      std::string why = ex.what();
      if (f.extension() == ".safetensors") {
        try {
          auto loaded = load_noisy_classifier(path);
          ClassifierEntry k;
          k.id = id;
          k.path = path;
          k.item_shape = loaded.net->options().item_shape();
          k.num_classes = loaded.net->options().num_classes;
          k.alphas_cumprod = loaded.diffusion.alphas_cumprod();
          if (loaded.meta.contains("data") && loaded.meta["data"].is_string())
            k.class_names = known_class_names(loaded.meta["data"].get<std::string>());
          if (static_cast<int64_t>(k.class_names.size()) != k.num_classes) {
            k.class_names.clear();
            for (int64_t j = 0; j < k.num_classes; ++j) k.class_names.push_back("class " + std::to_string(j));
          }
          k.classifier = as_noisy_classifier(loaded.net);
          c->classifiers_.push_back(std::move(k));
          continue;
        } catch (const std::exception&) {
          // neither a model nor a noisy classifier: the model's reason is the one to show
        }
      }
      c->skipped_.push_back({f.filename().string(), why});
    }
  }
  for (auto& e : c->entries_)
    for (const auto& k : c->classifiers_)
      if (k.fits(e)) e.classifiers.push_back(k.id);
  return c;
}

const ClassifierEntry* Catalog::find_classifier(const std::string& id) const {
  if (!valid_model_id(id)) return nullptr;
  for (const auto& k : classifiers_)
    if (k.id == id) return &k;
  return nullptr;
}

const ModelEntry* Catalog::find(const std::string& id) const {
  if (!valid_model_id(id)) return nullptr;
  for (const auto& e : entries_)
    if (e.id == id) return &e;
  return nullptr;
}

std::shared_ptr<const Model> Catalog::load(const std::string& id) {
  const ModelEntry* e = find(id);
  if (!e) throw InvalidArgument("unknown model '" + id + "'", "model");
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = cache_.begin(); it != cache_.end(); ++it) {
    if (it->first == id) {
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front().second;
    }
  }
  auto m = std::make_shared<const Model>(open_model(e->path));
  cache_.emplace_front(id, m);
  while (cache_.size() > cache_size_) cache_.pop_back();
  return m;
}

}  // namespace ddpm::serve

#include "ddpm/store/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "ddpm/data/points.h"
#include "ddpm/errors.h"
#include "ddpm/models/exact.h"
#include "ddpm/models/torchscript.h"
#include "ddpm/resources.h"
#include "ddpm/samplers.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/store/classifier.h"
#include "ddpm/store/import.h"

namespace ddpm {
namespace {

std::map<std::string, std::string> parse_kv(const std::string& s, const std::string& what) {
  std::map<std::string, std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto eq = item.find('=');
    if (eq == std::string::npos) throw InvalidArgument(what + ": expected key=value, got '" + item + "'", "model");
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

double parse_double(const std::string& s, const std::string& what) {
  try {
    size_t pos = 0;
    double v = std::stod(s, &pos);
    if (pos != s.size()) throw std::invalid_argument("trailing");
    return v;
  } catch (const std::exception&) {
    throw InvalidArgument(what + ": '" + s + "' is not a number", "model");
  }
}

Model exact_model(GaussianMixture g, const std::string& spec, const OpenOptions& o) {
  Model m;
  m.kind = Model::Kind::exact;
  m.spec = spec;
  m.description = "exact denoiser of " + spec;
  m.diffusion = o.diffusion.over(DiffusionConfig());
  if (learns_variance(m.diffusion.var_type))
    throw InvalidArgument("exact denoisers predict the mean only; use var_type fixed_small or fixed_large", "var_type");
  ExactMixtureDenoiser d(g, m.diffusion.alphas_cumprod(), m.diffusion.mean_type);
  m.denoiser = d.as_denoiser();
  m.num_classes = g.num_components() > 1 ? g.num_components() : 0;
  m.null_label = g.num_components();
  m.item_shape = {g.dim()};
  m.mixture = std::move(g);
  return m;
}

Model open_gaussian(const std::string& spec, const OpenOptions& o) {
  const std::string what = "gaussian:mean=M,std=S,dim=D";
  auto kv = parse_kv(spec.substr(9), what);
  for (const auto& [k, v] : kv)
    if (k != "mean" && k != "std" && k != "dim")
      throw InvalidArgument(what + ": unknown key '" + k + "' (use mean, std, dim)", "model");
  const double mean = kv.count("mean") ? parse_double(kv["mean"], "mean") : 0.0;
  const double std = kv.count("std") ? parse_double(kv["std"], "std") : 1.0;
  const double dim = kv.count("dim") ? parse_double(kv["dim"], "dim") : 2.0;
  if (!(std > 0)) throw InvalidArgument(what + ": std must be positive", "model");
  if (dim < 1 || dim != std::floor(dim)) throw InvalidArgument(what + ": dim must be a positive integer", "model");
  return exact_model(GaussianMixture::gaussian(mean, std, static_cast<int64_t>(dim)), spec, o);
}

Model open_torchscript(const std::string& spec, const OpenOptions& o) {
  const std::string path = spec.rfind("torchscript:", 0) == 0 ? spec.substr(12) : spec;
  const std::string side = torchscript_sidecar(path);
  nlohmann::json j = nlohmann::json::object();
  if (std::filesystem::exists(side)) {
    try {
      std::ifstream in(side);
      j = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw FormatError("'" + side + "' is not valid JSON: " + std::string(e.what()));
    }
  }
  if (!j.contains("item_shape"))
    throw InvalidArgument("TorchScript model '" + path + "' needs a sidecar '" + side +
                          "' giving at least {\"item_shape\": [C, H, W]} (and its schedule, timesteps, mean_type, "
                          "var_type, num_classes unless the defaults hold)");
  Model m;
  m.kind = Model::Kind::torchscript;
  m.spec = spec;
  m.description = path;
  try {
    m.diffusion = o.diffusion.over(j.get<DiffusionConfig>());
    m.item_shape = j["item_shape"].get<std::vector<int64_t>>();
    m.num_classes = j.value("num_classes", int64_t{0});
    m.null_label = j.value("null_label", m.num_classes);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError("'" + side + "': a value of the wrong type (" + std::string(e.what()) + ")");
  }
  if (m.item_shape.empty() || m.item_shape.size() > 4)
    throw InvalidArgument("'" + side + "': item_shape must have 1 to 4 dimensions ([D] or [C, H, W])", "item_shape");
  uint64_t elements = 1;
  for (int64_t d : m.item_shape) {
    if (d < 1) throw InvalidArgument("'" + side + "': every item_shape dimension must be positive", "item_shape");
    elements = bytes_of(elements, static_cast<uint64_t>(d));
  }
  if (elements > (uint64_t{1} << 31))
    throw InvalidArgument("'" + side + "': item_shape holds " + std::to_string(elements) + " numbers per item; at most 2^31",
                          "item_shape");
  if (m.num_classes < 0 || m.num_classes > (int64_t{1} << 24))
    throw InvalidArgument("'" + side + "': num_classes must be 0 to 2^24", "num_classes");
  if (m.null_label < 0 || m.null_label > m.num_classes)
    throw InvalidArgument("'" + side + "': null_label must be 0 to num_classes", "null_label");
  // The probe call below holds an input and an output of one item.
  require_memory(bytes_of(elements, 3 * sizeof(float)), "probing '" + path + "' with one item", "", "item_shape");
  auto ts = load_torchscript(path, m.null_label);
  if (ts.arity == 3 && m.num_classes == 0)
    throw InvalidArgument("'" + path + "' takes labels (forward(x, t, y)); give \"num_classes\" in '" + side + "'");
  if (ts.arity == 2 && m.num_classes > 0)
    throw InvalidArgument("'" + path + "' takes no labels (forward(x, t)) but '" + side + "' says num_classes = " +
                          std::to_string(m.num_classes));
  // One probe call: the output must be one item per input, with twice the channels when the variance is learned.
  const auto shape = m.batch_shape(1);
  auto probe = ts.denoiser(at::zeros(shape), at::zeros({1}, at::kLong), at::Tensor());
  auto want = shape;
  if (learns_variance(m.diffusion.var_type)) want[1] *= 2;
  if (!probe.sizes().equals(want))
    throw InvalidArgument("'" + path + "' returns " + std::string(c10::str(probe.sizes())) + " for input " +
                          std::string(c10::str(at::IntArrayRef(shape))) + "; with var_type " +
                          to_string(m.diffusion.var_type) + " it must return " +
                          std::string(c10::str(at::IntArrayRef(want))));
  m.denoiser = ts.denoiser;
  m.meta = j;
  return m;
}

// A network of this project (a checkpoint's, or an import's) as a Model.
Model network_model(const std::string& spec, std::shared_ptr<Network> net, const DiffusionConfig& stored,
                    nlohmann::json meta, const OpenOptions& o) {
  Model m;
  m.kind = Model::Kind::checkpoint;
  m.spec = spec;
  m.description = spec;
  m.diffusion = o.diffusion.check_against(stored, "'" + spec + "'");
  m.network = std::move(net);
  m.network->set_attention_precision(o.attention);
  m.network->set_compute_precision(o.compute);
  m.denoiser = as_denoiser(m.network);
  m.num_classes = m.network->num_classes();
  m.null_label = m.num_classes;
  m.item_shape = m.network->item_shape();
  m.meta = std::move(meta);
  return m;
}

}  // namespace

std::vector<int64_t> Model::batch_shape(int64_t n) const {
  std::vector<int64_t> s = {n};
  s.insert(s.end(), item_shape.begin(), item_shape.end());
  return s;
}

at::Tensor Model::labels(int64_t n, const std::optional<int64_t>& klass, const at::Tensor& data_labels) const {
  if (num_classes == 0) {
    if (klass) throw InvalidArgument("class needs a class-conditional model; this one has no classes", "class");
    return {};
  }
  auto opt = at::TensorOptions().dtype(at::kLong);
  if (klass) {
    if (*klass < 0 || *klass >= num_classes)
      throw InvalidArgument("class must be in 0.." + std::to_string(num_classes - 1), "class");
    return at::full({n}, *klass, opt);
  }
  if (data_labels.defined() && data_labels.numel() == n && data_labels.max().item<int64_t>() < num_classes)
    return data_labels.to(at::kLong);
  return at::full({n}, null_label, opt);
}

Denoiser Model::guided(double w) const {
  if (w == 0.0) return denoiser;
  if (num_classes == 0) throw InvalidArgument("guidance needs a class-conditional model", "guidance");
  return classifier_free_guidance(denoiser, w, null_label, learns_variance(diffusion.var_type));
}

OpenedClassifier open_noisy_classifier(const std::string& spec, const Model& model) {
  if (spec == "exact") {
    if (!model.mixture)
      throw InvalidArgument("'exact' exists for exact mixture models (gmm:…, gaussian:…) only", "classifier");
    ExactNoisyClassifier c(*model.mixture, model.diffusion.make().alphas_cumprod());
    return {c.as_classifier(), c.num_classes(), "the exact noisy classifier of " + model.spec};
  }
  if (!std::filesystem::exists(spec))
    throw InvalidArgument("no classifier '" + spec + "': give a file made by `ddpm classifier train --noisy`, or "
                          "'exact' (in closed form, for gmm: and gaussian: models)",
                          "classifier");
  auto loaded = load_noisy_classifier(spec);
  const auto mine = loaded.diffusion.alphas_cumprod(), theirs = model.diffusion.alphas_cumprod();
  bool same = mine.size() == theirs.size();
  for (size_t i = 0; same && i < mine.size(); ++i) same = std::abs(mine[i] - theirs[i]) <= 1e-9 * (1 + theirs[i]);
  if (!same)
    throw ConfigMismatch("the classifier '" + spec + "' was trained under " + to_string(loaded.diffusion.schedule) +
                         " T=" + std::to_string(loaded.diffusion.timesteps) + ", but " + model.description + " uses " +
                         to_string(model.diffusion.schedule) + " T=" + std::to_string(model.diffusion.timesteps) +
                         ": its x_t would not be the model's");
  const auto shape = loaded.net->options().item_shape();
  if (shape != model.item_shape)
    throw ConfigMismatch("the classifier '" + spec + "' takes items " + std::string(c10::str(shape)) + " but " +
                         model.description + " makes " + std::string(c10::str(model.item_shape)));
  const int64_t K = loaded.net->options().num_classes;
  return {as_noisy_classifier(loaded.net), K,
          "the noisy classifier " + spec + " (" + std::to_string(K) + " classes)"};
}

bool is_torchscript_spec(const std::string& spec) {
  auto ends = [&](const std::string& ext) {
    return spec.size() > ext.size() && spec.compare(spec.size() - ext.size(), ext.size(), ext) == 0;
  };
  if (spec.rfind("improved:", 0) == 0) return false;
  return spec.rfind("torchscript:", 0) == 0 || ends(".pt") || ends(".pth") || ends(".ts");
}

std::string torchscript_sidecar(const std::string& path) {
  return std::filesystem::path(path).replace_extension(".json").string();
}

Model open_model(const std::string& spec, const OpenOptions& o) {
  if (spec.rfind("gaussian:", 0) == 0) return open_gaussian(spec, o);
  if (spec.rfind("gmm:", 0) == 0) {
    const std::string what = spec.substr(4);
    const auto names = toy_names();
    GaussianMixture g = std::find(names.begin(), names.end(), what) != names.end() ? toy_mixture(what)
                                                                                     : load_mixture_json(what);
    return exact_model(std::move(g), spec, o);
  }
  if (spec.rfind("diffusers:", 0) == 0 || spec.rfind("improved:", 0) == 0) {
    // Imported on the fly: "diffusers:DIR", "improved:FILE.pt --image_size 32 ..." (the flags after the file).
    ImportedModel im;
    if (spec[0] == 'd') {
      im = import_diffusers(spec.substr(10));
    } else {
      const std::string rest = spec.substr(9);
      const auto cut = rest.find(" --");
      im = import_improved(rest.substr(0, cut), cut == std::string::npos ? "" : rest.substr(cut + 1));
    }
    return network_model(spec, im.network, im.diffusion,
                         {{"network", im.network->config()}, {"diffusion", im.diffusion}, {"step", 0},
                          {"imported", im.source}},
                         o);
  }
  if (is_torchscript_spec(spec)) return open_torchscript(spec, o);
  auto loaded = load_model(spec);
  return network_model(spec, loaded.network, loaded.diffusion, loaded.meta, o);
}

}  // namespace ddpm

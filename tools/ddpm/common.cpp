#include "common.h"

#include <sstream>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/io/checkpoint.h"
#include "ddpm/io/file.h"
#include "ddpm/models/exact.h"
#include "ddpm/models/torchscript.h"

namespace ddpm::cli {

GlobalOptions& global_options() {
  static GlobalOptions g;
  return g;
}

void DiffusionFlags::add(CLI::App* app, bool training) {
  auto* g = app;
  g->add_option("--schedule", schedule, "noise schedule: linear, cosine, quadratic, sigmoid [linear]");
  g->add_option("--timesteps,-T", timesteps, "diffusion steps T [1000]");
  g->add_option("--mean-type", mean_type, "what the network predicts: eps, x0, prev_x, v [eps]");
  g->add_option("--var-type", var_type, "reverse variance: fixed_small, fixed_large, learned, learned_range [fixed_large]");
  if (training) {
    g->add_option("--loss", loss, "objective: mse, rescaled_mse, kl, rescaled_kl, hybrid [mse]");
    g->add_option("--timestep-sampler", timestep_sampler, "timestep sampling: uniform, loss-second-moment [uniform]");
  }
}

DiffusionConfig DiffusionFlags::resolve() const { return resolve_over(DiffusionConfig()); }

DiffusionConfig DiffusionFlags::resolve_over(DiffusionConfig c) const {
  if (schedule) c.schedule = *schedule;
  if (timesteps) c.timesteps = *timesteps;
  if (mean_type) c.mean_type = *mean_type;
  if (var_type) c.var_type = *var_type;
  if (loss) c.loss = *loss;
  if (timestep_sampler) c.timestep_sampler = *timestep_sampler;
  c.validate();
  return c;
}

DiffusionConfig DiffusionFlags::merge_with(const DiffusionConfig& s, const std::string& source) const {
  resolve();  // validates the names given
  auto check = [&](const char* flag, const auto& given, const auto& stored) {
    if (given && *given != stored) {
      std::ostringstream os;
      os << source << " was trained with " << flag << " " << stored << "; it cannot be used with " << flag << " "
         << *given << " (drop the flag)";
      throw ConfigMismatch(os.str());
    }
  };
  check("--schedule", schedule, s.schedule);
  check("--timesteps", timesteps, s.timesteps);
  check("--mean-type", mean_type, s.mean_type);
  check("--var-type", var_type, s.var_type);
  check("--loss", loss, s.loss);
  check("--timestep-sampler", timestep_sampler, s.timestep_sampler);
  return s;
}

namespace {

std::map<std::string, std::string> parse_kv(const std::string& s, const std::string& what) {
  std::map<std::string, std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto eq = item.find('=');
    if (eq == std::string::npos) throw InvalidArgument(what + ": expected key=value, got '" + item + "'");
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
    throw InvalidArgument(what + ": '" + s + "' is not a number");
  }
}

ModelHandle exact_handle(GaussianMixture g, const DiffusionFlags& flags, const std::string& description) {
  ModelHandle h;
  h.diffusion = flags.resolve();
  const auto vt = parse_var_type(h.diffusion.var_type);
  if (learns_variance(vt))
    throw InvalidArgument("exact denoisers predict the mean only; use --var-type fixed_small or fixed_large");
  ExactMixtureDenoiser d(g, h.diffusion.make().alphas_cumprod(), parse_mean_type(h.diffusion.mean_type));
  h.denoiser = d.as_denoiser();
  h.num_classes = g.num_components() > 1 ? g.num_components() : 0;
  h.null_label = g.num_components();
  h.item_shape = {g.dim()};
  h.mixture = std::move(g);
  h.description = description;
  return h;
}

}  // namespace

bool is_torchscript_spec(const std::string& spec) {
  auto ends = [&](const std::string& ext) {
    return spec.size() > ext.size() && spec.compare(spec.size() - ext.size(), ext.size(), ext) == 0;
  };
  return spec.rfind("torchscript:", 0) == 0 || ends(".pt") || ends(".pth") || ends(".ts");
}

std::string torchscript_sidecar(const std::string& path) {
  return std::filesystem::path(path).replace_extension(".json").string();
}

namespace {

ModelHandle load_torchscript_handle(const std::string& spec, const DiffusionFlags& flags) {
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
  ModelHandle h;
  h.diffusion = flags.resolve_over(DiffusionConfig::from_json(j));
  h.item_shape = j["item_shape"].get<std::vector<int64_t>>();
  h.num_classes = j.value("num_classes", int64_t{0});
  h.null_label = j.value("null_label", h.num_classes);
  if (h.item_shape.empty()) throw InvalidArgument("'" + side + "': item_shape must not be empty");
  auto ts = load_torchscript(path, h.null_label);
  if (ts.arity == 3 && h.num_classes == 0)
    throw InvalidArgument("'" + path + "' takes labels (forward(x, t, y)); give \"num_classes\" in '" + side + "'");
  if (ts.arity == 2 && h.num_classes > 0)
    throw InvalidArgument("'" + path + "' takes no labels (forward(x, t)) but '" + side + "' says num_classes = " +
                          std::to_string(h.num_classes));
  // One probe call: the output must be one item per input, with twice the channels when the variance is learned.
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), h.item_shape.begin(), h.item_shape.end());
  auto probe = ts.denoiser(at::zeros(shape), at::zeros({1}, at::kLong), at::Tensor());
  auto want = shape;
  if (learns_variance(parse_var_type(h.diffusion.var_type))) want[1] *= 2;
  if (!probe.sizes().equals(want))
    throw InvalidArgument("'" + path + "' returns " + std::string(c10::str(probe.sizes())) + " for input " +
                          std::string(c10::str(at::IntArrayRef(shape))) + "; with var_type " + h.diffusion.var_type +
                          " it must return " + std::string(c10::str(at::IntArrayRef(want))));
  h.denoiser = ts.denoiser;
  h.meta = j;
  h.description = path;
  return h;
}

}  // namespace

ModelHandle load_model_spec(const std::string& spec, const DiffusionFlags& flags) {
  if (spec.rfind("gaussian:", 0) == 0) {
    auto kv = parse_kv(spec.substr(9), "--model gaussian:mean=M,std=S,dim=D");
    for (const auto& [k, v] : kv)
      if (k != "mean" && k != "std" && k != "dim")
        throw InvalidArgument("--model gaussian: unknown key '" + k + "' (use mean, std, dim)");
    const double mean = kv.count("mean") ? parse_double(kv["mean"], "mean") : 0.0;
    const double std = kv.count("std") ? parse_double(kv["std"], "std") : 1.0;
    const double dim = kv.count("dim") ? parse_double(kv["dim"], "dim") : 2.0;
    if (!(std > 0)) throw InvalidArgument("--model gaussian: std must be positive");
    if (dim < 1 || dim != std::floor(dim)) throw InvalidArgument("--model gaussian: dim must be a positive integer");
    return exact_handle(GaussianMixture::gaussian(mean, std, static_cast<int64_t>(dim)), flags,
                        "exact denoiser of " + spec);
  }
  if (spec.rfind("gmm:", 0) == 0) {
    const std::string what = spec.substr(4);
    const auto names = toy_names();
    GaussianMixture g = std::find(names.begin(), names.end(), what) != names.end() ? toy_mixture(what)
                                                                                     : load_mixture_json(what);
    return exact_handle(std::move(g), flags, "exact denoiser of " + spec);
  }
  if (is_torchscript_spec(spec)) return load_torchscript_handle(spec, flags);
  auto m = load_model(spec);
  ModelHandle h;
  h.diffusion = flags.merge_with(m.diffusion, "'" + spec + "'");
  h.network = m.network;
  h.network->set_attention_precision(parse_attention_precision(global_options().attention));
  h.denoiser = as_denoiser(m.network);
  h.num_classes = m.network->num_classes();
  h.null_label = h.num_classes;
  h.item_shape = m.network->item_shape();
  h.meta = m.meta;
  h.description = spec;
  return h;
}

PointSet load_data_spec(const std::string& spec, int64_t size, uint64_t seed, const std::string& labels) {
  if (spec.rfind("toy:", 0) == 0) {
    if (!labels.empty()) throw InvalidArgument("--labels applies to .npy data only; toy sets bring their own");
    return make_toy(spec.substr(4), size, seed);
  }
  if (spec.size() > 4 && spec.substr(spec.size() - 4) == ".npy") return load_points_npy(spec, labels);
  throw InvalidArgument("--data must be toy:NAME or a .npy file (got '" + spec + "')");
}

at::Device parse_device(const std::string& name) {
  if (name == "cpu") return at::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    if (!at::hasCUDA()) throw InvalidArgument("--device " + name + ": this build of ddpm has no CUDA (LibTorch is CPU-only)");
    return at::Device(name);
  }
  throw InvalidArgument("unknown device '" + name + "' (choose cpu or cuda)");
}

Color palette(int i) {
  static const Color c[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},   {148, 103, 189},
                            {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  return c[((i % 10) + 10) % 10];
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  char b[32];
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
  return b;
}

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      enabled_(enabled && !global_options().quiet),
      tty_(::isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_(start_ - std::chrono::hours(1)) {}

Progress::~Progress() {
  if (enabled_ && tty_ && !finished_) std::cerr << "\n";
}

void Progress::update(int64_t done, const std::string& extra) { draw(done, extra, false); }

void Progress::finish(const std::string& extra) {
  if (finished_) return;
  draw(total_, extra, true);
  finished_ = true;
}

void Progress::draw(int64_t done, const std::string& extra, bool final) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double frac = std::min(1.0, static_cast<double>(done) / total_);
  const int decile = static_cast<int>(frac * 10);
  if (tty_) {
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
  } else if (!final && (done >= total_ || (decile == last_decile_ && now - last_ < std::chrono::seconds(60)))) {
    return;  // plain lines: every tenth of the way, and at least once a minute on long work
  }
  last_ = now;
  last_decile_ = decile;
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : NAN;
  char stats[160];
  std::snprintf(stats, sizeof stats, "%3d%% %lld/%lld %.1f it/s %s %s", static_cast<int>(frac * 100),
                static_cast<long long>(done), static_cast<long long>(total_), rate, final ? "took" : "ETA",
                format_duration(final ? elapsed : eta).c_str());
  if (tty_) {
    const int width = 24, filled = static_cast<int>(frac * width);
    std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
    std::cerr << "\r\033[K" << label_ << " [" << bar << "] " << stats << (extra.empty() ? "" : "  ") << extra
              << (final ? "\n" : "") << std::flush;
  } else {
    std::cerr << label_ << ": " << stats << (extra.empty() ? "" : "  ") << extra << "\n" << std::flush;
  }
}

void check_writable(const std::string& path) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (!fs::is_directory(parent)) throw IoError("cannot write '" + path + "': directory '" + parent.string() + "' does not exist");
  if (::access(parent.c_str(), W_OK) != 0) throw IoError("cannot write '" + path + "': directory not writable");
  if (fs::is_directory(p)) throw IoError("cannot write '" + path + "': it is a directory");
}

void write_text(const std::string& path, const std::string& text) { write_file_atomic(path, text); }

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> out;
  for (const auto& item : split_list(text)) {
    try {
      size_t pos = 0;
      out.push_back(std::stoll(item, &pos));
      if (pos != item.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw InvalidArgument(flag + " expects comma-separated integers (got '" + text + "')");
    }
  }
  if (out.empty()) throw InvalidArgument(flag + " needs at least one value");
  return out;
}

at::Tensor ImageBatch::crop(const at::Tensor& y) const {
  return y.slice(2, pad_h, y.size(2) - pad_h).slice(3, pad_w, y.size(3) - pad_w);
}

ImageBatch load_input_images(const ModelHandle& h, const std::string& files, const std::string& data,
                             const std::string& indices, int64_t count) {
  if (h.item_shape.size() != 3)
    throw InvalidArgument("this command works on images; '" + h.description + "' is not an image model");
  ImageSet set;
  std::string source;
  if (!files.empty()) {
    set = read_image_files(split_list(files));
    source = "'" + files + "'";
  } else {
    set = load_image_dataset(data);
    source = "'" + data + "'";
    std::vector<int64_t> idx;
    if (indices.empty()) {
      for (int64_t i = 0; i < std::min(count, set.size()); ++i) idx.push_back(i);
    } else {
      idx = parse_int_list(indices, "--index");
    }
    for (int64_t i : idx)
      if (i < 0 || i >= set.size())
        throw InvalidArgument("--index " + std::to_string(i) + " is outside " + source + " (0.." +
                              std::to_string(set.size() - 1) + ")");
    auto sel = at::tensor(idx, at::TensorOptions().dtype(at::kLong));
    set.images = set.images.index_select(0, sel);
    if (set.labels.defined()) set.labels = set.labels.index_select(0, sel);
  }
  const int64_t C = h.item_shape[0], H = h.item_shape[1], W = h.item_shape[2];
  const int64_t h0 = set.images.size(2), w0 = set.images.size(3);
  if (set.images.size(1) != C || h0 > H || w0 > W || (H - h0) % 2 || (W - w0) % 2 ||
      (h0 != H && padded_side(h0) != H))
    throw InvalidArgument("the images of " + source + " are " + std::to_string(set.images.size(1)) + "×" +
                          std::to_string(h0) + "×" + std::to_string(w0) + " (C×H×W); the model takes " +
                          std::to_string(C) + "×" + std::to_string(H) + "×" + std::to_string(W));
  ImageBatch b;
  b.x = to_model_range(set.images, H);
  b.labels = set.labels;
  b.pad_h = (H - h0) / 2;
  b.pad_w = (W - w0) / 2;
  return b;
}

at::Tensor labels_for(const ModelHandle& h, int64_t n, const std::optional<int64_t>& klass,
                      const at::Tensor& data_labels) {
  if (h.num_classes == 0) {
    if (klass) throw InvalidArgument("--class needs a class-conditional model; this one has no classes");
    return {};
  }
  auto opt = at::TensorOptions().dtype(at::kLong);
  if (klass) {
    if (*klass < 0 || *klass >= h.num_classes)
      throw InvalidArgument("--class must be in 0.." + std::to_string(h.num_classes - 1));
    return at::full({n}, *klass, opt);
  }
  if (data_labels.defined() && data_labels.numel() == n && data_labels.max().item<int64_t>() < h.num_classes)
    return data_labels.to(at::kLong);
  return at::full({n}, h.null_label, opt);
}

void SamplerChoice::check(const std::string& allowed) const {
  const auto names = split_list(allowed);
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    std::string list;
    for (size_t i = 0; i < names.size(); ++i) list += (i ? (i + 1 == names.size() ? " or " : ", ") : "") + names[i];
    throw InvalidArgument("unknown sampler '" + name + "' (choose " + list + ")");
  }
}

int64_t SamplerChoice::default_steps(int64_t T) const {
  const int64_t n = name == "ddim" ? 50 : name == "dpm++" ? 20 : name == "langevin" ? 100 : T;
  return std::min(n, T);
}

std::string SamplerChoice::default_spacing(const DiffusionConfig& d) const {
  if (name == "dpm++" || name == "langevin") return d.schedule == "cosine" ? "trailing" : "logsnr";
  return "ddim";
}

at::Tensor SamplerChoice::run(const GaussianDiffusion& d, const Denoiser& model, const at::Tensor& x_T,
                              at::Generator& gen, const SampleOptions& o) const {
  if (name == "ddpm") return ddpm_sample(d, model, x_T, gen, o);
  if (name == "ddim") return ddim_sample(d, model, x_T, eta, gen, o);
  if (name == "dpm++") return dpm_solver_sample(d, model, x_T, order, o);
  if (name == "langevin") return langevin_sample(d, model, x_T, gen, langevin, o);
  throw InvalidArgument("unknown sampler '" + name + "' (choose ddpm, ddim, dpm++ or langevin)");
}

void save_grid(const std::string& path, const at::Tensor& images, int64_t ncol) {
  int64_t zoom = global_options().zoom;
  if (zoom == 0) {
    const int64_t side = std::max(images.size(2), images.size(3));
    zoom = side <= 32 ? 3 : side <= 64 ? 2 : 1;
  }
  save_image_grid(path, images, ncol, zoom);
}

double rmse_255(const at::Tensor& a, const at::Tensor& b) {
  auto d = (a.to(at::kDouble).clamp(-1, 1) - b.to(at::kDouble).clamp(-1, 1)) * 127.5;
  return d.pow(2).mean().sqrt().item<double>();
}

}  // namespace ddpm::cli

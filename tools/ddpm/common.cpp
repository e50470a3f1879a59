#include "common.h"

#include "ddpm/serve/generation.h"

#include <sstream>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/io/file.h"
#include "ddpm/names.h"
#include "ddpm/timestep_sampler.h"

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

DiffusionOverrides DiffusionFlags::overrides() const {
  DiffusionOverrides o;
  if (schedule) o.schedule = parse_name<BetaSchedule>(*schedule);
  if (timesteps) o.timesteps = *timesteps;
  if (mean_type) o.mean_type = parse_name<MeanType>(*mean_type);
  if (var_type) o.var_type = parse_name<VarType>(*var_type);
  if (loss) parse_name<LossType>(*loss);
  if (timestep_sampler) check_timestep_sampler_name(*timestep_sampler);
  o.over(DiffusionConfig());  // the range of --timesteps
  return o;
}

void DiffusionFlags::apply_training(TrainConfig& t) const {
  if (loss) t.loss = parse_name<LossType>(*loss);
  if (timestep_sampler) t.timestep_sampler = *timestep_sampler;
}

Model open_cli_model(const std::string& spec, const DiffusionFlags& flags) {
  OpenOptions o;
  o.diffusion = flags.overrides();
  o.attention = parse_attention_precision(global_options().attention);
  const bool automatic = global_options().precision == "auto";
  o.compute = automatic ? ComputePrecision::fp32 : parse_name<ComputePrecision>(global_options().precision);
  auto m = open_model(spec, o);
  if (automatic && m.network) report_precision_choice(choose_compute_precision(*m.network));
  return m;
}

void report_precision_choice(const PrecisionTiming& t) {
  if (global_options().quiet) return;
  char line[200];
  if (std::isnan(t.bf16_seconds))
    std::snprintf(line, sizeof line, "precision auto: fp32 (this network has no bf16 path)");
  else
    std::snprintf(line, sizeof line, "precision auto: %s (a forward pass of %lld: %.3f s in bf16, %.3f s in fp32)",
                  name_of(t.chosen).c_str(), static_cast<long long>(t.batch), t.bf16_seconds, t.fp32_seconds);
  std::cerr << line << "\n";
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

ImageBatch load_input_images(const Model& h, const std::string& files, const std::string& data,
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
  return images_for_model(set, h.item_shape, source);
}

void add_input_image_flags(CLI::App* c, std::string& images, std::string& data, std::string& index, int64_t& num) {
  c->add_option("--images", images, "comma-separated PNG/JPEG files (instead of --data)");
  c->add_option("--data", data, "image data set")->capture_default_str();
  c->add_option("--index", index, "which images of --data (comma-separated) [the first --num]");
  c->add_option("--num,-n", num, "images when no --index is given")->capture_default_str();
}

void add_sampler_flags(CLI::App* c, SamplerSpec& spec, const std::vector<std::string>& allowed, bool parameters) {
  std::string help;
  for (const auto& info : sampler_registry()) {
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), info.name) == allowed.end()) continue;
    help += (help.empty() ? "" : "; ") + info.name + ": " + info.help;
  }
  c->add_option("--sampler", spec.name, help)->capture_default_str();
  if (!parameters) return;
  c->add_option("--order", spec.order, "DPM-Solver++ order: 2 (2M) or 1 (= DDIM)")->capture_default_str();
  c->add_option("--langevin-steps", spec.langevin.steps_per_level, "Langevin steps per noise level")->capture_default_str();
  c->add_option("--langevin-scale", spec.langevin.step_scale, "Langevin step δ: α_t = δ (1-ᾱ_t)/ᾱ_t")->capture_default_str();
  c->add_option("--eta", spec.eta, "DDIM stochasticity η ≥ 0 (0 deterministic, 1 ≈ DDPM)")->capture_default_str();
}

std::string flag_for_field(const std::string& field) {
  static const std::map<std::string, std::string> flags = {
      {"schedule", "--schedule"},   {"timesteps", "--timesteps"},       {"mean_type", "--mean-type"},
      {"var_type", "--var-type"},   {"loss", "--loss"},                 {"timestep_sampler", "--timestep-sampler"},
      {"steps", "--steps"},         {"batch", "--batch"},               {"lr", "--lr"},
      {"warmup", "--warmup"},       {"ema_decay", "--ema-decay"},       {"label_dropout", "--label-dropout"},
      {"sampler", "--sampler"},     {"eta", "--eta"},                   {"order", "--order"},
      {"langevin_steps", "--langevin-steps"}, {"langevin_scale", "--langevin-scale"},
      {"class", "--class"},         {"guidance", "--guidance"},         {"data", "--data"},
      {"labels", "--labels"},       {"model", "--model"},               {"models_dir", "--models-dir"},
      {"classifier", "--classifier"}, {"classifier_scale", "--classifier-scale"}, {"jump", "--jump"},
      {"resample", "--resample"},   {"strength", "--strength"},         {"region", "--region"},
      {"mask", "--mask"},           {"data_size", "--data-size"},
      {"data_seed", "--data-seed"}, {"hidden", "--hidden"},             {"blocks", "--blocks"},
      {"channels", "--channels"},   {"channel_mult", "--channel-mult"}, {"res_blocks", "--res-blocks"},
      {"attention", "--attention"}, {"dropout", "--dropout"},           {"groups", "--groups"},
      {"grad_clip", "--grad-clip"}, {"seed", "--seed"},                 {"random_flip", "--random-flip"},
      {"conditional", "--conditional"}, {"preset", "--preset"},  {"num", "--num"}};
  auto it = flags.find(field);
  return it == flags.end() ? std::string() : it->second;
}

std::string render_error(const Error& e) {
  std::string msg = e.what();
  const std::string flag = flag_for_field(e.field());
  if (flag.empty()) return msg;
  // Every whole-word use of the field outside quotes (paths and values are quoted) becomes the flag.
  const std::string& f = e.field();
  auto word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-'; };
  std::string out;
  bool quoted = false;
  for (size_t i = 0; i < msg.size();) {
    if (msg[i] == '\'') quoted = !quoted;
    if (!quoted && msg.compare(i, f.size(), f) == 0 && (i == 0 || !word(msg[i - 1])) &&
        (i + f.size() == msg.size() || !word(msg[i + f.size()]))) {
      out += flag;
      i += f.size();
    } else {
      out += msg[i++];
    }
  }
  return out;
}

void attach_classifier(GenerationRequest& req, const std::string& path, double scale, const Model& h) {
  if (path.empty()) return;
  auto c = open_noisy_classifier(path, h);
  req.classifier = c.classifier;
  req.classifier_classes = c.num_classes;
  req.classifier_scale = scale;
  req.classifier_spec = path;
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

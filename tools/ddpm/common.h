// Shared pieces of the ddpm command-line tool: diffusion flags, model and data specs, progress display.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/data/points.h"
#include "ddpm/diffusion.h"
#include "ddpm/io/plot.h"
#include "ddpm/samplers.h"
#include "ddpm/models/network.h"
#include "ddpm/train/config.h"

namespace ddpm::cli {

/// The diffusion flags, spelled the same on every command. A flag the user did not give is empty, so a
/// checkpoint's own settings fill it and a contradicting flag can be refused.
struct DiffusionFlags {
  std::optional<std::string> schedule, mean_type, var_type, loss, timestep_sampler;
  std::optional<int64_t> timesteps;
  void add(CLI::App* app, bool training);
  /// Defaults overridden by the flags given.
  DiffusionConfig resolve() const;
  /// `base` (e.g. a preset's) overridden by the flags given.
  DiffusionConfig resolve_over(DiffusionConfig base) const;
  /// A checkpoint's settings; throws ConfigMismatch if a given flag contradicts them.
  DiffusionConfig merge_with(const DiffusionConfig& stored, const std::string& source) const;
};

/// A model as the CLI accepts it: a checkpoint, or an exact denoiser spelled gaussian:... or gmm:....
struct ModelHandle {
  Denoiser denoiser;
  DiffusionConfig diffusion;
  int64_t num_classes = 0;       ///< 0 if unconditional
  int64_t null_label = 0;
  std::vector<int64_t> item_shape;
  std::shared_ptr<Network> network;  ///< null for exact denoisers
  nlohmann::json meta;               ///< checkpoint metadata, or {} for exact denoisers
  std::optional<GaussianMixture> mixture;  ///< for exact denoisers
  std::string description;
};

/// CHECKPOINT.safetensors | MODEL.pt (TorchScript, settings from MODEL.json beside it and the flags) |
/// gaussian:mean=M,std=S,dim=D | gmm:FILE.json | gmm:NAME.
ModelHandle load_model_spec(const std::string& spec, const DiffusionFlags& flags);
/// True for torchscript:PATH and paths ending in .pt, .pth or .ts.
bool is_torchscript_spec(const std::string& spec);
/// MODEL.pt → MODEL.json.
std::string torchscript_sidecar(const std::string& path);

/// --data toy:NAME | FILE.npy (with an optional labels file); toy sets use `size` points drawn with `seed`.
PointSet load_data_spec(const std::string& spec, int64_t size, uint64_t seed, const std::string& labels = "");

/// "cpu" or "cuda" ("cuda:N"); throws InvalidArgument when CUDA is asked for but not available.
at::Device parse_device(const std::string& name);

/// Colours of the plots.
Color palette(int i);

/// A progress bar on a terminal (redrawn in place), plain lines otherwise; silent when disabled.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  ~Progress();
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");

 private:
  void draw(int64_t done, const std::string& extra, bool final);
  std::string label_;
  int64_t total_;
  bool enabled_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
  int last_decile_ = -1;
};

/// "1:23" / "1:02:03".
std::string format_duration(double seconds);

/// Thrown by a command that has already reported its failure (ddpm launch, passing on a child's exit code).
struct SilentExit {
  int code;
};

/// Global options every command honours.
struct GlobalOptions {
  int threads = 0;
  bool quiet = false;
  int64_t zoom = 0;  ///< image grids: pixels per image pixel; 0 = 3 up to 32 px images, 2 up to 64, else 1
  std::string attention = "fp32";  ///< attention precision of networks loaded by load_model_spec
};
GlobalOptions& global_options();

/// Throws IoError unless a file can be created at `path` (checked before long work starts); empty = no file.
void check_writable(const std::string& path);

/// Writes `text` to `path` atomically (CSV, JSON); throws IoError.
void write_text(const std::string& path, const std::string& text);

/// "3,17,4" → {3, 17, 4}; throws InvalidArgument naming `flag` on anything else.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag);
std::vector<std::string> split_list(const std::string& text);

/// Real images for commands that start from data, in the model's range and size.
struct ImageBatch {
  at::Tensor x;       ///< [N, C, H, W] float in [-1, 1], padded to the model's size
  at::Tensor labels;  ///< [N] int64, or undefined (files, unlabelled sets)
  int64_t pad_h = 0, pad_w = 0;  ///< padding added on each side (top/left), so metrics can crop it away
  int64_t size() const { return x.size(0); }
  /// The images without the padding.
  at::Tensor crop(const at::Tensor& y) const;
};

/// Images from `files` (comma-separated PNG/JPEG paths) or else from the data set `data` at `indices`
/// (comma-separated; empty = the first `count`). Throws InvalidArgument when the model is not an image model or
/// the images do not fit it.
ImageBatch load_input_images(const ModelHandle& h, const std::string& files, const std::string& data,
                             const std::string& indices, int64_t count);

/// Class labels for N items of a conditional model: --class K if given, else `data_labels` if defined, else the
/// null label (unconditional, for models trained with label dropout). Undefined for unconditional models.
at::Tensor labels_for(const ModelHandle& h, int64_t n, const std::optional<int64_t>& klass,
                      const at::Tensor& data_labels = {});

/// The samplers the CLI names: "ddpm", "ddim", "dpm++" (2M) and "langevin".
struct SamplerChoice {
  std::string name = "ddpm";
  double eta = 0.0;                ///< DDIM
  int order = 2;                   ///< DPM-Solver++
  LangevinOptions langevin;        ///< Langevin
  /// Throws InvalidArgument unless `name` is one of `allowed` (comma-separated).
  void check(const std::string& allowed) const;
  /// Steps when --steps is not given: T for ddpm, 50 for ddim, 20 for dpm++, 100 noise levels for langevin (≤ T).
  int64_t default_steps(int64_t T) const;
  /// Spacing when --spacing is not given: log-SNR for dpm++ and langevin ("trailing" on the cosine schedule, whose
  /// ᾱ_T is nearly 0 and where log-SNR steps crowd the noisy end; docs/RESULTS.md), "ddim" otherwise.
  std::string default_spacing(const DiffusionConfig& d) const;
  /// Model calls the run makes (for progress bars).
  int64_t calls(int64_t steps) const { return name == "langevin" ? steps * langevin.steps_per_level : steps; }
  at::Tensor run(const GaussianDiffusion& d, const Denoiser& model, const at::Tensor& x_T, at::Generator& gen,
                 const SampleOptions& o) const;
};

/// save_image_grid with the --zoom of the command line.
void save_grid(const std::string& path, const at::Tensor& images, int64_t ncol);

/// RMSE between images in [-1, 1], on the 0–255 scale.
double rmse_255(const at::Tensor& a, const at::Tensor& b);

}  // namespace ddpm::cli

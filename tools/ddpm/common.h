// Shared pieces of the ddpm command-line tool: diffusion flags, model and data specs, progress display.
#pragma once

#include "ddpm/data/images.h"

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
#include "ddpm/errors.h"
#include "ddpm/sampler_registry.h"
#include "ddpm/samplers.h"
#include "ddpm/models/network.h"
#include "ddpm/store/model.h"
#include "ddpm/train/config.h"

namespace ddpm {
struct GenerationRequest;
}

namespace ddpm::cli {

/// The diffusion flags, spelled the same on every command. A flag the user did not give is empty, so a
/// checkpoint's own settings fill it and a contradicting flag can be refused (by the library: open_model).
struct DiffusionFlags {
  std::optional<std::string> schedule, mean_type, var_type, loss, timestep_sampler;
  std::optional<int64_t> timesteps;
  void add(CLI::App* app, bool training);
  /// The flags given, as typed settings (names checked).
  DiffusionOverrides overrides() const;
  /// --loss and --timestep-sampler, where given, into a training configuration.
  void apply_training(TrainConfig& t) const;
};

/// One stderr line saying what --precision auto chose and the two timings (nothing with --quiet).
void report_precision_choice(const PrecisionTiming& timing);

/// open_model with the diffusion flags and the global --attention-precision and --precision (auto: measured on the
/// opened network, choice reported).
Model open_cli_model(const std::string& spec, const DiffusionFlags& flags);

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
  std::string precision = "fp32";  ///< compute precision of networks loaded or trained (ComputePrecision)
};
GlobalOptions& global_options();

/// Throws IoError unless a file can be created at `path` (checked before long work starts); empty = no file.
void check_writable(const std::string& path);

/// "3,17,4" → {3, 17, 4}; throws InvalidArgument naming `flag` on anything else.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag);
std::vector<std::string> split_list(const std::string& text);

/// Real images for commands that start from data, in the model's range and size.
using ImageBatch = ModelImages;

/// Images from `files` (comma-separated PNG/JPEG paths) or else from the data set `data` at `indices`
/// (comma-separated; empty = the first `count`). Throws InvalidArgument when the model is not an image model or
/// the images do not fit it.
ImageBatch load_input_images(const Model& h, const std::string& files, const std::string& data,
                             const std::string& indices, int64_t count);

/// --images, --data, --index and --num of the commands that start from real images (load_input_images).
void add_input_image_flags(CLI::App* c, std::string& images, std::string& data, std::string& index, int64_t& num);

/// The sampler flags every sampling command shares, bound to the library's SamplerSpec; the help text lists what
/// the sampler registry says. `allowed` limits the names (empty = every registered sampler).
void add_sampler_flags(CLI::App* c, SamplerSpec& spec, const std::vector<std::string>& allowed = {},
                       bool parameters = true);

/// The CLI's spelling of a library field ("timesteps" → "--timesteps"), or "" when it has none.
std::string flag_for_field(const std::string& field);
/// A library error's message with its field spelled as the flag: "timesteps must be ..." → "--timesteps must be ...".
std::string render_error(const Error& e);

/// --classifier FILE --classifier-scale S of the sampling commands: opens the noisy classifier for model `h` (refusing
/// one trained for another process or image size) and sets it on `req`. Nothing happens for an empty path.
void attach_classifier(GenerationRequest& req, const std::string& path, double scale, const Model& h);

/// save_image_grid with the --zoom of the command line.
void save_grid(const std::string& path, const at::Tensor& images, int64_t ncol);

/// RMSE between images in [-1, 1], on the 0–255 scale.
double rmse_255(const at::Tensor& a, const at::Tensor& b);

}  // namespace ddpm::cli

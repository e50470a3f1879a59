// A training run as `ddpm train` runs it, in the library: the papers' presets, the network chosen from the data,
// resuming with the settings a checkpoint holds (a given setting that contradicts them is refused), the cadence of
// checkpoints, metrics lines and sample grids, and the stop agreed across data-parallel ranks. Front ends bind
// their flags to a RunRequest and draw the progress; nothing here prints.
#pragma once

#include <ATen/ATen.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/diffusion_config.h"
#include "ddpm/models/unet.h"
#include "ddpm/train/config.h"
#include "ddpm/train/distributed.h"
#include "ddpm/train/trainer.h"

namespace ddpm {

/// What a run trains on, as its checkpoint records it ("data"): toy:NAME (size points drawn with seed), FILE.npy
/// (with labels), or an image data set (fashion-mnist, cifar10:DIR, idx:…, folder:DIR).
struct DataSource {
  std::string spec = "toy:8gaussians";
  int64_t size = 50000;
  uint64_t seed = 0;
  std::string labels;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DataSource, spec, size, seed, labels)

/// Points [N, D], or images scaled to [-1, 1] (28-pixel sides padded to 32).
struct TrainingData {
  at::Tensor x, labels;
  int64_t num_classes = 0;
  bool images = false;
  std::vector<std::string> class_names;
};
TrainingData load_training_data(const DataSource& source);

/// The papers' settings: fashion-mnist (a small class-conditional U-Net for 2 CPU cores), cifar10-ddpm (the DDPM
/// paper's 35.7M model), cifar10-improved (Improved DDPM: cosine, T = 4000, learned_range + hybrid).
struct Preset {
  UNetOptions unet;
  DiffusionConfig diffusion;
  TrainConfig train;
  std::string data;
  bool conditional = false;
};
Preset make_preset(const std::string& name);

/// A run's settings as a user gives them: every unset field takes the preset's value, else the default. On resume
/// the checkpoint's settings hold and each given field must agree (only steps may change).
struct RunRequest {
  std::string out = "runs/toy";   ///< directory of checkpoint.safetensors, metrics.jsonl, samples_STEP.png
  std::string preset;             ///< empty = none
  bool resume_requested = false;  ///< for front ends: resume() rather than start()
  std::optional<std::string> data, labels;
  std::optional<int64_t> data_size;
  std::optional<uint64_t> data_seed;
  bool conditional = false;
  std::optional<double> label_dropout;
  // The network: an MLP for points, a U-Net for images.
  std::optional<int64_t> hidden, blocks;                // MLP
  std::optional<int64_t> channels, res_blocks, groups;  // U-Net
  std::optional<std::vector<int64_t>> channel_mult, attention;
  std::optional<double> dropout;
  DiffusionOverrides diffusion;
  std::optional<LossType> loss;
  std::optional<std::string> timestep_sampler;
  std::optional<int64_t> steps, batch, warmup;
  std::optional<double> lr, grad_clip, ema_decay;
  std::optional<uint64_t> seed;
  std::optional<bool> random_flip;
  std::string device = "cpu";  ///< "cpu", "cuda" or "cuda:N" (data-parallel front ends pick each rank's own)
  /// Arithmetic of the network (mixed precision with bf16); a runtime choice, not recorded in the checkpoint.
  ComputePrecision precision = ComputePrecision::fp32;
  std::string command;  ///< the command line, recorded in the checkpoint (and appended to "resumed" on resume)
};

/// Defaults of the training settings a request leaves unset (and no preset sets): 4000 steps, batch 256, Adam 2e-3.
TrainConfig run_defaults();

struct RunCadence {
  int64_t checkpoint_every = 1000;
  int64_t log_every = 100;
  int64_t sample_every = 0;  ///< image runs: a grid of EMA samples (DDIM 50, seed 1234) every N steps; 0 = never
  int64_t zoom = 0;          ///< the grid's pixels per image pixel; 0 = 3 up to 32 px images, 2 up to 64, else 1
};

class TrainingRun {
 public:
  /// A new run: loads the data, builds the network (seeded by the training seed) and, on rank 0, starts a fresh
  /// metrics file. Throws InvalidArgument naming the field at fault.
  static std::unique_ptr<TrainingRun> start(const RunRequest& request, RunCadence cadence = {},
                                            std::shared_ptr<Communicator> comm = nullptr);
  /// Continues OUT/checkpoint.safetensors (request.steps may extend it); throws IoError when there is none and
  /// ConfigMismatch (field set) when a given setting contradicts the checkpoint.
  static std::unique_ptr<TrainingRun> resume(const RunRequest& request, RunCadence cadence = {},
                                             std::shared_ptr<Communicator> comm = nullptr);
  /// What start() would train — network, parameters, settings, data — without training.
  static nlohmann::json describe(const RunRequest& request);

  /// One optimisation step, then on rank 0 the metrics line, checkpoint and sample grid that fall due.
  StepStats step();
  bool finished() const { return trainer_->finished(); }
  /// True on every rank when any rank asks to stop (a collective in data-parallel runs; call it on all ranks).
  bool agree_to_stop(bool this_rank_asks);
  /// Writes the checkpoint now (rank 0).
  void save();

  const Trainer& trainer() const { return *trainer_; }
  const TrainingData& data() const { return data_; }
  const std::string& checkpoint_path() const { return ckpt_; }
  bool root() const { return trainer_->rank() == 0; }

 private:
  TrainingRun() = default;
  void open_metrics(bool fresh);
  void write_grid();

  RunCadence cadence_;
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<Trainer> trainer_;
  TrainingData data_;
  nlohmann::json extra_;  ///< data, command, resumed: stored in every checkpoint
  std::string out_, ckpt_, metrics_path_;
  at::Device device_ = at::kCPU;
  std::unique_ptr<std::ofstream> metrics_;
  double started_ = 0;  ///< steady-clock seconds at the start (metrics' it_per_s)
  int64_t start_step_ = 0;
};

}  // namespace ddpm

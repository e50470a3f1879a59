// The training loop (Algorithm 1 with the DDPM recipe: Adam, warm-up, gradient clipping, EMA, label dropout).
// It owns no files: it exposes its complete state as named tensors plus JSON, which the io layer writes.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/errors.h"
#include "ddpm/losses.h"
#include "ddpm/models/network.h"
#include "ddpm/store/train_state.h"
#include "ddpm/timestep_sampler.h"
#include "ddpm/train/adam.h"
#include "ddpm/train/config.h"
#include "ddpm/train/distributed.h"
#include "ddpm/train/loader.h"

namespace ddpm {

/// A step whose loss or gradient norm is not finite (a learning rate far too large, a network that overflowed). The
/// step's update is not applied, so the weights, optimiser and EMA stay those of the last finite step.
class TrainingDiverged : public Error {
 public:
  using Error::Error;
};

struct StepStats {
  int64_t step = 0;   ///< steps completed
  double loss = 0;    ///< mean weighted loss of the batch
  double mse = 0;     ///< mean L_simple term (NaN for kl losses)
  double vb = 0;      ///< mean VLB term (NaN when none)
  double grad_norm = 0;
  double lr = 0;
};

class Trainer {
 public:
  /// data: [N, ...] float32 (kept on the CPU); labels: [N] int64 or undefined. The network is moved to `device` and
  /// trained in place; an EMA copy is kept. Noise is drawn on the CPU, so a seed gives the same run on any device.
  ///
  /// With a communicator of W > 1 ranks the training is data-parallel: rank 0's initial weights are broadcast,
  /// config.batch is the per-rank batch, every rank draws the random numbers of the whole global batch (labels
  /// dropped, timesteps, noise) from the shared seed and uses its slice, the timestep sampler sees every rank's
  /// losses, and gradients are averaged before clipping — so W ranks take the steps one process would take with a
  /// batch W× as large, and every rank holds identical weights.
  Trainer(std::shared_ptr<Network> net, DiffusionConfig diffusion, TrainConfig config, at::Tensor data,
          at::Tensor labels, Decoder decoder = Decoder::continuous, at::Device device = at::kCPU,
          std::shared_ptr<Communicator> comm = nullptr);

  /// One optimisation step on the next batch. It seeds LibTorch's default CPU generator (which dropout uses) from
  /// (seed, step, rank) first, so every step is a function of the state alone and resumption is exact. Throws
  /// TrainingDiverged, before changing any state, when the loss or the (all-reduced) gradient norm is not finite.
  StepStats step();
  int64_t steps_done() const { return step_; }
  bool finished() const { return step_ >= config_.steps; }

  std::shared_ptr<Network> network() const { return net_; }
  std::shared_ptr<Network> ema_network() const { return ema_; }
  const DiffusionConfig& diffusion_config() const { return dcfg_; }
  const TrainConfig& config() const { return config_; }
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int world_size() const { return comm_ ? comm_->world_size() : 1; }
  /// Images (or points) per step over all ranks.
  int64_t global_batch() const { return config_.batch * world_size(); }

  TrainState state() const;
  /// Restores a state() of a trainer with the same network and settings; throws ConfigMismatch otherwise.
  void load_state(const TrainState& state);

 private:
  std::shared_ptr<Network> net_, ema_;
  DiffusionConfig dcfg_;
  TrainConfig config_;
  GaussianDiffusion diffusion_;
  Decoder decoder_;
  at::Tensor data_, labels_;
  int64_t num_classes_;
  std::unique_ptr<TimestepSampler> timesteps_;
  bool adaptive_timesteps_ = false;
  std::unique_ptr<Adam> adam_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_, ema_params_;
  at::Generator gen_;
  at::Device device_;
  std::unique_ptr<BatchLoader> loader_;
  std::shared_ptr<Communicator> comm_;
  int64_t step_ = 0;
};

}  // namespace ddpm

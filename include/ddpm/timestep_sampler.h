// Which timesteps a training batch sees (SPEC §3; improved-diffusion's resample.py).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

namespace ddpm {

struct TimestepDraw {
  at::Tensor t;        ///< [B] int64 timestep indices
  at::Tensor weights;  ///< [B] 1/(T p_t): multiplying the loss by these keeps its expectation unbiased
};

class TimestepSampler {
 public:
  explicit TimestepSampler(int64_t num_timesteps) : T_(num_timesteps) {}
  virtual ~TimestepSampler() = default;
  /// Unnormalised sampling weights, one per timestep.
  virtual std::vector<double> weights() const = 0;
  /// Draws `batch` timesteps with probability ∝ weights().
  TimestepDraw sample(int64_t batch, at::Generator gen) const;
  /// Records the per-example losses of the timesteps just trained (no-op unless the sampler adapts).
  virtual void update(const at::Tensor& /*t*/, const at::Tensor& /*losses*/) {}
  /// State for exact resumption (empty for stateless samplers).
  virtual at::Tensor state() const { return {}; }
  virtual void load_state(const at::Tensor& /*state*/) {}
  int64_t num_timesteps() const { return T_; }

 protected:
  int64_t T_;
};

/// t ~ U{0..T-1}.
class UniformSampler : public TimestepSampler {
 public:
  using TimestepSampler::TimestepSampler;
  std::vector<double> weights() const override { return std::vector<double>(T_, 1.0); }
};

/// Improved DDPM §3.3: p_t ∝ √E[L_t²] over the last `history` losses of each t, uniform until every t has
/// `history` entries, mixed with `uniform_prob` of the uniform distribution.
class LossSecondMomentResampler : public TimestepSampler {
 public:
  explicit LossSecondMomentResampler(int64_t num_timesteps, int64_t history = 10, double uniform_prob = 0.001);
  std::vector<double> weights() const override;
  void update(const at::Tensor& t, const at::Tensor& losses) override;
  /// [T, history + 1] doubles: the loss history and, in the last column, the count of each t.
  at::Tensor state() const override;
  void load_state(const at::Tensor& state) override;
  bool warmed_up() const;

 private:
  int64_t history_;
  double uniform_prob_;
  std::vector<std::vector<double>> losses_;  // ring buffer per timestep, oldest first
  std::vector<int64_t> counts_;
};

/// "uniform" | "loss-second-moment" (also accepted: "importance").
std::unique_ptr<TimestepSampler> make_timestep_sampler(const std::string& name, int64_t num_timesteps);
/// Throws InvalidArgument unless `name` is a known sampler name.
void check_timestep_sampler_name(const std::string& name);

}  // namespace ddpm

// What every trainable denoising network offers: a forward pass (x_t, t, y) → output and a JSON description that
// rebuilds it. Networks know nothing of schedules; the diffusion interprets their output.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <nlohmann/json.hpp>

#include "ddpm/diffusion.h"

namespace ddpm {

/// Arithmetic of a network's attention products (q·k and the softmax-weighted sum of v). fp32 is the exact path;
/// bf16 runs both products and the softmax in bfloat16 (rounding of about 0.4% per score), several times faster on
/// CPUs with AMX or AVX512-BF16; docs/PERFORMANCE.md measures its effect on FID and bits/dim.
enum class AttentionPrecision { fp32, bf16 };
template <>
struct EnumNames<AttentionPrecision> {
  static constexpr const char* what = "attention precision";
  static constexpr std::pair<AttentionPrecision, const char*> table[] = {{AttentionPrecision::fp32, "fp32"},
                                                                         {AttentionPrecision::bf16, "bf16"}};
};

/// "fp32" | "bf16"; throws InvalidArgument otherwise.
AttentionPrecision parse_attention_precision(const std::string& name);

/// Arithmetic of a network's convolutions and activations. fp32 is the exact path. bf16 is mixed precision as
/// autocast does it: parameters stay float (so training updates float master weights and the optimizer state is
/// float), activations and convolutions run in bfloat16 — twice as fast on CPUs whose oneDNN has native bf16
/// convolutions (AVX512-BF16 or AMX), slower on others — while the timestep embedding, every normalisation's
/// statistics, the output convolution and the output stay float. docs/PERFORMANCE.md measures speed and quality.
enum class ComputePrecision { fp32, bf16 };
template <>
struct EnumNames<ComputePrecision> {
  static constexpr const char* what = "compute precision";
  static constexpr std::pair<ComputePrecision, const char*> table[] = {{ComputePrecision::fp32, "fp32"},
                                                                       {ComputePrecision::bf16, "bf16"}};
};

class Network : public torch::nn::Module {
 public:
  /// t: original timestep indices [B] (int64); y: class labels [B] (int64) or undefined (= the null label).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) = 0;
  /// {"type": ..., and every option}: make_network(config()) builds the same architecture.
  virtual nlohmann::json config() const = 0;
  /// 0 when unconditional; otherwise labels 0..num_classes-1 and num_classes is the null label.
  virtual int64_t num_classes() const = 0;
  /// 2 when the output carries a variance half (learned / learned_range), else 1.
  virtual int64_t output_factor() const = 0;
  /// Shape of one data item, e.g. {2} for 2-D points.
  virtual std::vector<int64_t> item_shape() const = 0;
  int64_t num_parameters() const;
  /// Networks without attention ignore it.
  virtual void set_attention_precision(AttentionPrecision) {}
  /// Networks without a reduced-precision path ignore it (and report fp32).
  virtual void set_compute_precision(ComputePrecision) {}
  virtual ComputePrecision compute_precision() const { return ComputePrecision::fp32; }
  /// Bytes one item needs in a forward pass without gradients (training = false) or in a training step, estimated
  /// from the architecture, for refusing work up front that cannot fit; 0 when the network cannot say.
  virtual double memory_per_item(bool /*training*/) const { return 0; }
};

/// A start-up micro-measurement for `--precision auto`: one forward pass of `batch` random items at t = 500 (no
/// gradients, eval mode; the mode is restored), best of `repeats` after a warm-up, in fp32 and in bf16. The
/// network is left in the faster precision. Networks without a bf16 path stay fp32 (bf16_seconds is then NaN).
struct PrecisionTiming {
  ComputePrecision chosen = ComputePrecision::fp32;
  double fp32_seconds = 0, bf16_seconds = 0;
  int64_t batch = 0;
};
PrecisionTiming choose_compute_precision(Network& net, int64_t batch = 8, int repeats = 2);

/// Builds a network from its config(); throws InvalidArgument for an unknown type or bad option.
std::shared_ptr<Network> make_network(const nlohmann::json& config);

/// A network config with every option spelled out (defaults filled in), so that the config of a checkpoint written
/// before an option existed compares equal to the same network's config today. Throws as make_network.
nlohmann::json normalized_network_config(const nlohmann::json& config);

/// The network as a Denoiser callback (evaluated as it is: call eval() first for sampling).
Denoiser as_denoiser(std::shared_ptr<Network> net);

}  // namespace ddpm

// The DDPM U-Net (Ho et al. 2020, Appendix B; SPEC §6): a PixelCNN++-style U-Net of wide ResNet blocks with
// GroupNorm, sinusoidal timestep embedding added in every block, single-head self-attention at chosen resolutions,
// and zero-initialised last layers, so a fresh model predicts exactly zero.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <mutex>
#include <unordered_map>
#include <vector>

#include "ddpm/models/network.h"

namespace ddpm {

/// How a downsampling convolution (3×3, stride 2) pads: symmetric = one pixel on every side (improved-diffusion,
/// this project); tf_same = one pixel on the right and bottom only, as TensorFlow's "SAME" (the DDPM paper's code
/// and its diffusers ports, google/ddpm-*).
enum class DownsamplePadding { symmetric, tf_same };
template <>
struct EnumNames<DownsamplePadding> {
  static constexpr const char* what = "downsample padding";
  static constexpr std::pair<DownsamplePadding, const char*> table[] = {{DownsamplePadding::symmetric, "symmetric"},
                                                                        {DownsamplePadding::tf_same, "tf_same"}};
};

/// The defaults are this project's network (the DDPM paper's); the options after num_classes describe the
/// variants of published models (diffusers UNet2DModel, improved-diffusion UNetModel) so that they import exactly.
struct UNetOptions {
  int64_t in_channels = 3;                     ///< image channels
  int64_t image_size = 32;                     ///< nominal side; attention resolutions refer to it
  int64_t base_channels = 128;                 ///< ch
  std::vector<int64_t> channel_mult = {1, 2, 2, 2};
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attention_resolutions = {16};
  double dropout = 0.1;
  int64_t groups = 32;                         ///< GroupNorm groups
  bool learn_sigma = false;                    ///< output 2 × in_channels (learned / learned_range variance)
  int64_t num_classes = 0;                     ///< > 0: class embedding with one extra null label
  DownsamplePadding downsample_padding = DownsamplePadding::symmetric;
  bool flip_sin_to_cos = false;                ///< timestep embedding [cos, sin] instead of [sin, cos]
  int64_t freq_shift = 1;                      ///< ω_k = exp(−ln(10⁴)·k/(half − freq_shift)): 1 (DDPM) or 0
  double timestep_scale = 1.0;                 ///< the network embeds t·timestep_scale (improved's rescale_timesteps)
  double norm_eps = 1e-6;                      ///< eps of every GroupNorm
  int64_t num_heads = 1;                       ///< attention heads (down path and middle)
  int64_t num_heads_upsample = -1;             ///< heads of the up path; −1: num_heads
  int64_t head_channels = 0;                   ///< > 0: heads = channels / head_channels everywhere (overrides both)
  bool scale_shift_norm = false;               ///< FiLM: GN(h)·(1 + scale) + shift from the timestep embedding
  bool mid_attention = true;                   ///< attention between the two middle ResNet blocks
  /// Every field by name, and "type": "unet" (the network config of checkpoints).
  nlohmann::json to_json() const;
  static UNetOptions from_json(const nlohmann::json& j);
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(UNetOptions, in_channels, image_size, base_channels, channel_mult,
                                                num_res_blocks, attention_resolutions, dropout, groups, learn_sigma,
                                                num_classes, downsample_padding, flip_sin_to_cos, freq_shift,
                                                timestep_scale, norm_eps, num_heads, num_heads_upsample, head_channels,
                                                scale_shift_norm, mid_attention)

/// Reduced-precision copies of float convolution weights for inference (no gradient wanted): made once per weight
/// version and reused until the weights change (an optimizer or EMA step, a load). Thread-safe.
class WeightCache {
 public:
  /// w in type t: the cached copy when gradients are off, a fresh differentiable cast otherwise.
  at::Tensor get(const at::Tensor& w, at::ScalarType t);

 private:
  struct Entry {
    at::Tensor source, copy;
    int64_t version = -1;
    const void* data = nullptr;
  };
  std::mutex mutex_;
  std::unordered_map<const void*, Entry> entries_;
};

/// conv(x) in x's type: a float convolution given bfloat16 activations runs in bfloat16 with its weights cast (through
/// `cache` when not null), accumulating in float inside oneDNN; given float activations it is the plain module call.
at::Tensor conv_in_type(torch::nn::Conv2d conv, const at::Tensor& x, WeightCache* cache = nullptr);

/// GroupNorm → SiLU → conv3×3 → + Dense(SiLU(temb)) → GroupNorm → SiLU → dropout → conv3×3 (zero init);
/// a 1×1 convolution on the shortcut when the channel count changes. With scale_shift the dense layer gives
/// [scale; shift] (2·out values) and the second half is GroupNorm(h)·(1 + scale) + shift → SiLU → dropout → conv.
class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t temb_dim, double dropout, int64_t groups, double eps = 1e-6,
               bool scale_shift = false);
  /// x in float or bfloat16 (the result has x's type); temb_act float.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb_act);
  std::shared_ptr<WeightCache> weights;  ///< set by UNet::set_compute_precision

 private:
  bool scale_shift_ = false;
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
  torch::nn::Linear temb_proj{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(ResBlock);

/// Single-head attention of [B, C, N] queries, keys and values over the N positions: out_i = Σ_j softmax_j(q_i·k_j/√C) v_j.
/// With bf16 the products and the softmax run in bfloat16 and the result is returned in q's type. When q is a
/// transposed view (memory [B, N, C], as channels-last activations give), so is the result.
at::Tensor spatial_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             AttentionPrecision precision = AttentionPrecision::fp32);

/// Self-attention over the spatial positions, 1×1 q/k/v, zero-initialised output projection. With several heads
/// each head attends with its own contiguous block of channels/heads channels of q, k and v (scale 1/√d).
class AttnBlockImpl : public torch::nn::Module {
 public:
  AttnBlockImpl(int64_t channels, int64_t groups, double eps = 1e-6, int64_t heads = 1);
  at::Tensor forward(const at::Tensor& x);
  AttentionPrecision precision = AttentionPrecision::fp32;
  std::shared_ptr<WeightCache> weights;  ///< set by UNet::set_compute_precision

 private:
  int64_t heads_ = 1;
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};
TORCH_MODULE(AttnBlock);

/// One resolution of the U-Net: its ResNet blocks, their attention blocks (if any), and the resampling conv.
class LevelImpl : public torch::nn::Module {
 public:
  LevelImpl();
  torch::nn::ModuleList block, attn;
  torch::nn::Conv2d resample{nullptr};
};
TORCH_MODULE(Level);

/// The middle of the U-Net: ResBlock, attention (unless options.mid_attention is false), ResBlock.
class MiddleImpl : public torch::nn::Module {
 public:
  MiddleImpl(int64_t channels, int64_t temb_dim, const UNetOptions& options, int64_t heads);
  ResBlock block1{nullptr}, block2{nullptr};
  AttnBlock attn1{nullptr};
};
TORCH_MODULE(Middle);

class UNet : public Network {
 public:
  explicit UNet(UNetOptions options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) override;
  nlohmann::json config() const override;
  int64_t num_classes() const override { return options_.num_classes; }
  std::vector<int64_t> item_shape() const override {
    return {options_.in_channels, options_.image_size, options_.image_size};
  }
  int64_t output_factor() const override { return options_.learn_sigma ? 2 : 1; }
  const UNetOptions& options() const { return options_; }
  /// Attention heads of a block with `channels` channels on the down path and middle (up = false) or the up path.
  static int64_t heads_for(const UNetOptions& options, int64_t channels, bool up);
  void set_attention_precision(AttentionPrecision p) override;
  void set_compute_precision(ComputePrecision p) override;
  ComputePrecision compute_precision() const override { return compute_; }
  double memory_per_item(bool training) const override;

 private:
  UNetOptions options_;
  ComputePrecision compute_ = ComputePrecision::fp32;
  std::shared_ptr<WeightCache> weights_;
  torch::nn::Linear temb_dense0{nullptr}, temb_dense1{nullptr};
  torch::nn::Embedding class_emb{nullptr};
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
  torch::nn::ModuleList down{nullptr}, up{nullptr};  // up[i] is the level of resolution i, as down[i]
  Middle mid{nullptr};
};

}  // namespace ddpm

#include "ddpm/models/unet.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/init.h>

#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/models/embedding.h"
#include "ddpm/models/dropout.h"
#include "ddpm/models/group_norm.h"
#include "ddpm/models/unet_cost.h"
#include "ddpm/resources.h"

namespace ddpm {
namespace {

namespace F = torch::nn::functional;

// DDPM initialises every layer with variance scaling (fan_avg, uniform) — Glorot uniform — and zero biases.
template <class M>
void default_init(M& m, double scale = 1.0) {
  torch::NoGradGuard g;
  if (scale == 0.0)
    m->weight.zero_();
  else
    torch::nn::init::xavier_uniform_(m->weight, std::sqrt(scale));
  if (m->bias.defined()) m->bias.zero_();
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, double scale = 1.0,
                       int64_t padding = -1) {
  torch::nn::Conv2d c(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding < 0 ? kernel / 2 : padding));
  default_init(c, scale);
  return c;
}

torch::nn::Linear dense(int64_t in, int64_t out, double scale = 1.0) {
  torch::nn::Linear l(in, out);
  default_init(l, scale);
  return l;
}

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  if (channels % groups != 0)
    throw InvalidArgument("GroupNorm: " + std::to_string(channels) + " channels do not split into " +
                              std::to_string(groups) + " equal parts; groups must divide every channel count",
                          "groups");
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

// The module's GroupNorm, then SiLU, in one fused pass (group_norm.h).
at::Tensor norm_act(const torch::nn::GroupNorm& norm, const at::Tensor& x, bool silu = true,
                    const at::Tensor& shift = {}) {
  return group_norm_silu(x, norm->options.num_groups(), norm->weight, norm->bias, norm->options.eps(), silu, shift);
}

}  // namespace

at::Tensor WeightCache::get(const at::Tensor& w, at::ScalarType t) {
  if (!w.defined() || w.scalar_type() == t) return w;
  if (at::GradMode::is_enabled() && w.requires_grad()) return w.to(t);
  std::lock_guard<std::mutex> lock(mutex_);
  auto& e = entries_[w.unsafeGetTensorImpl()];
  // The entry holds its source, so the key cannot be reused by another tensor while it lives.
  if (!e.source.defined() || e.version != static_cast<int64_t>(w._version()) || e.data != w.data_ptr() ||
      e.copy.scalar_type() != t) {
    e.source = w;
    e.version = static_cast<int64_t>(w._version());
    e.data = w.data_ptr();
    e.copy = w.detach().to(t);
  }
  return e.copy;
}

at::Tensor conv_in_type(torch::nn::Conv2d c, const at::Tensor& x, WeightCache* cache) {
  const auto t = x.scalar_type();
  if (t == c->weight.scalar_type()) return c->forward(x);
  const auto& o = c->options;
  if (torch::enumtype::get_enum_name(o.padding_mode()) != "kZeros")
    throw InvalidArgument("a reduced-precision convolution needs zero padding");
  auto cast = [&](const at::Tensor& w) { return cache ? cache->get(w, t) : (w.defined() ? w.to(t) : w); };
  return F::conv2d(x, cast(c->weight),
                   F::Conv2dFuncOptions().bias(cast(c->bias)).stride(o.stride()).padding(o.padding()).dilation(
                       o.dilation()).groups(o.groups()));
}

nlohmann::json UNetOptions::to_json() const {
  nlohmann::json j = *this;
  j["type"] = "unet";
  return j;
}

UNetOptions UNetOptions::from_json(const nlohmann::json& j) { return j.get<UNetOptions>(); }

ResBlockImpl::ResBlockImpl(int64_t in, int64_t out, int64_t temb_dim, double p, int64_t groups, double eps,
                           bool scale_shift)
    : scale_shift_(scale_shift) {
  norm1 = register_module("norm1", group_norm(groups, in, eps));
  conv1 = register_module("conv1", conv(in, out, 3));
  temb_proj = register_module("temb_proj", dense(temb_dim, scale_shift ? 2 * out : out));
  norm2 = register_module("norm2", group_norm(groups, out, eps));
  dropout = register_module("dropout", torch::nn::Dropout(p));
  conv2 = register_module("conv2", conv(out, out, 3, 1, 0.0));  // zero init: the block starts as the identity
  if (in != out) nin_shortcut = register_module("nin_shortcut", conv(in, out, 1));
}

at::Tensor ResBlockImpl::forward(const at::Tensor& x, const at::Tensor& temb_act) {
  auto* w = weights.get();
  auto h = conv_in_type(conv1, norm_act(norm1, x), w);
  auto shortcut = nin_shortcut ? conv_in_type(nin_shortcut, x, w) : x;
  if (scale_shift_) {
    // FiLM after the norm (improved-diffusion's use_scale_shift_norm): not fused, GroupNorm then one affine pass.
    auto e = temb_proj(temb_act);
    const int64_t C = h.size(1);
    auto scale = e.narrow(1, 0, C).unsqueeze(-1).unsqueeze(-1), shift = e.narrow(1, C, C).unsqueeze(-1).unsqueeze(-1);
    auto n = F::silu(at::addcmul(shift, norm_act(norm2, h, /*silu=*/false), scale + 1.0)).to(h.scalar_type());
    h = conv_in_type(conv2, hashed_dropout(n, dropout->options.p(), is_training()), w);
    return shortcut + h;
  }
  // h + Dense(temb) goes only into norm2, which adds it itself.
  // Dropout with a hashed mask: at::dropout's serial Bernoulli draws cost 7% of a training step (PERFORMANCE.md).
  h = conv_in_type(conv2, hashed_dropout(norm_act(norm2, h, true, temb_proj(temb_act)), dropout->options.p(), is_training()),
                   w);
  return shortcut + h;
}

AttnBlockImpl::AttnBlockImpl(int64_t c, int64_t groups, double eps, int64_t heads) : heads_(heads) {
  if (heads < 1 || c % heads != 0)
    throw InvalidArgument("attention: " + std::to_string(c) + " channels do not split into " + std::to_string(heads) +
                              " heads",
                          "num_heads");
  norm = register_module("norm", group_norm(groups, c, eps));
  q = register_module("q", conv(c, c, 1));
  k = register_module("k", conv(c, c, 1));
  v = register_module("v", conv(c, c, 1));
  proj_out = register_module("proj_out", conv(c, c, 1, 1, 0.0));
}

at::Tensor AttnBlockImpl::forward(const at::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto h = norm_act(norm, x, /*silu=*/false);
  auto* w = weights.get();
  auto qh = conv_in_type(q, h, w), kh = conv_in_type(k, h, w), vh = conv_in_type(v, h, w);
  if (heads_ > 1) {
    // Head g owns channels [g·d, (g+1)·d) of q, k and v: [B, C, N] → [B·heads, d, N].
    const int64_t d = C / heads_;
    auto split = [&](const at::Tensor& a) { return a.reshape({B * heads_, d, H * W}); };
    auto out = spatial_attention(split(qh), split(kh), split(vh), precision);
    return x + conv_in_type(proj_out, out.reshape({B, C, H, W}).contiguous(x.suggest_memory_format()), w);
  }
  auto out = spatial_attention(qh.reshape({B, C, H * W}), kh.reshape({B, C, H * W}), vh.reshape({B, C, H * W}),
                               precision);
  return x + conv_in_type(proj_out, out.reshape({B, C, H, W}), w);
}

at::Tensor spatial_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             AttentionPrecision precision) {
  const int64_t C = q.size(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(C));
  // w[b, i, j] = softmax_j(q_i · k_j / √C); out_i = Σ_j w[i, j] v_j. In bf16 both products and the softmax run in
  // bfloat16 (oneDNN on AMX/AVX512-BF16), the scale applied before rounding. (Running the products as grouped 1×1
  // convolutions was faster on one host and slower on another: docs/PERFORMANCE.md, change 2.)
  // fp32 means float products even for bfloat16 activations (the bf16 compute path).
  const bool reduced = q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf;
  const auto dtype = precision == AttentionPrecision::bf16 ? at::kBFloat16 : reduced ? at::kFloat : q.scalar_type();
  auto qs = (q * scale).to(dtype), ks = k.to(dtype), vs = v.to(dtype);
  auto w = at::softmax(at::bmm(qs.transpose(1, 2), ks), -1);
  // Channels-last activations give q as a transposed view of [B, N, C]: return the same layout.
  auto out = q.is_contiguous() ? at::bmm(vs, w.transpose(1, 2)) : at::bmm(w, vs.transpose(1, 2)).transpose(1, 2);
  return out.to(q.scalar_type());
}

LevelImpl::LevelImpl() {
  block = register_module("block", torch::nn::ModuleList());
  attn = register_module("attn", torch::nn::ModuleList());
}

MiddleImpl::MiddleImpl(int64_t c, int64_t temb_dim, const UNetOptions& o, int64_t heads) {
  block1 = register_module("block1", ResBlock(c, c, temb_dim, o.dropout, o.groups, o.norm_eps, o.scale_shift_norm));
  if (o.mid_attention) attn1 = register_module("attn1", AttnBlock(c, o.groups, o.norm_eps, heads));
  block2 = register_module("block2", ResBlock(c, c, temb_dim, o.dropout, o.groups, o.norm_eps, o.scale_shift_norm));
}

int64_t UNet::heads_for(const UNetOptions& o, int64_t channels, bool up) {
  if (o.head_channels > 0) {
    if (channels % o.head_channels != 0)
      throw InvalidArgument("attention: " + std::to_string(channels) + " channels are not a multiple of head_channels " +
                                std::to_string(o.head_channels),
                            "head_channels");
    return channels / o.head_channels;
  }
  return up && o.num_heads_upsample > 0 ? o.num_heads_upsample : o.num_heads;
}

UNet::UNet(UNetOptions o) : options_(std::move(o)) {
  const auto& op = options_;
  if (op.in_channels < 1 || op.base_channels < 1 || op.channel_mult.empty() || op.num_res_blocks < 1 ||
      op.image_size < 1 || op.groups < 1 || op.num_classes < 0 || !(op.dropout >= 0 && op.dropout < 1))
    throw InvalidArgument("invalid U-Net options");
  if (!(op.norm_eps > 0)) throw InvalidArgument("norm_eps must be positive", "norm_eps");
  if (op.num_heads < 1 || op.num_heads_upsample == 0 || op.num_heads_upsample < -1 || op.head_channels < 0)
    throw InvalidArgument("attention heads must be positive (num_heads_upsample −1 = num_heads)", "num_heads");
  if (!(op.timestep_scale > 0)) throw InvalidArgument("timestep_scale must be positive", "timestep_scale");
  if (op.freq_shift != 0 && op.freq_shift != 1) throw InvalidArgument("freq_shift must be 0 or 1", "freq_shift");
  // Bounds far above any real network that keep the counting below in 64 bits (configurations come from files).
  if (op.image_size > 65536 || op.channel_mult.size() > 16 || op.num_res_blocks > 256 || op.in_channels > 65536 ||
      op.num_classes > (int64_t{1} << 24))
    throw InvalidArgument("U-Net options beyond any network this project can build (image side ≤ 65536, ≤ 16 levels, "
                          "≤ 256 blocks per level, ≤ 65536 input channels, ≤ 2^24 classes)");
  for (int64_t m : op.channel_mult)
    if (m < 1 || op.base_channels * m > 65536)
      throw InvalidArgument("every level's channels (base_channels × channel_mult) must be 1 to 65536", "channel_mult");
  // Every weight is allocated here: refuse a network that cannot fit before allocating any.
  const int64_t parameters = unet_cost(op, op.image_size).parameters;
  require_memory(bytes_of(static_cast<uint64_t>(parameters), sizeof(float)),
                 "a U-Net of " + std::to_string(parameters) + " parameters",
                 "use fewer channels or levels", "channels");
  const int64_t ch = op.base_channels, temb_dim = 4 * ch;
  temb_dense0 = register_module("temb_dense0", dense(ch, temb_dim));
  temb_dense1 = register_module("temb_dense1", dense(temb_dim, temb_dim));
  if (op.num_classes > 0) class_emb = register_module("class_emb", torch::nn::Embedding(op.num_classes + 1, temb_dim));
  conv_in = register_module("conv_in", conv(op.in_channels, ch, 3));

  auto has_attn = [&](int64_t level) {
    const int64_t res = op.image_size >> level;
    return std::find(op.attention_resolutions.begin(), op.attention_resolutions.end(), res) !=
           op.attention_resolutions.end();
  };
  const int64_t L = static_cast<int64_t>(op.channel_mult.size());
  std::vector<int64_t> skip_channels = {ch};
  int64_t cur = ch;
  down = register_module("down", torch::nn::ModuleList());
  for (int64_t i = 0; i < L; ++i) {
    Level lv;
    const int64_t out = ch * op.channel_mult[i];
    for (int64_t j = 0; j < op.num_res_blocks; ++j) {
      lv->block->push_back(ResBlock(cur, out, temb_dim, op.dropout, op.groups, op.norm_eps, op.scale_shift_norm));
      cur = out;
      if (has_attn(i)) lv->attn->push_back(AttnBlock(cur, op.groups, op.norm_eps, heads_for(op, cur, false)));
      skip_channels.push_back(cur);
    }
    if (i != L - 1) {
      // tf_same: the input is padded on the right and bottom in forward, then the convolution pads nothing.
      const bool tf = op.downsample_padding == DownsamplePadding::tf_same;
      lv->resample = lv->register_module("downsample", conv(cur, cur, 3, 2, 1.0, tf ? 0 : 1));
      skip_channels.push_back(cur);
    }
    down->push_back(lv);
  }
  mid = register_module("mid", Middle(cur, temb_dim, op, heads_for(op, cur, false)));
  std::vector<Level> ups(L);
  for (int64_t i = L - 1; i >= 0; --i) {
    Level lv;
    const int64_t out = ch * op.channel_mult[i];
    for (int64_t j = 0; j < op.num_res_blocks + 1; ++j) {
      const int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      lv->block->push_back(
          ResBlock(cur + skip, out, temb_dim, op.dropout, op.groups, op.norm_eps, op.scale_shift_norm));
      cur = out;
      if (has_attn(i)) lv->attn->push_back(AttnBlock(cur, op.groups, op.norm_eps, heads_for(op, cur, true)));
    }
    if (i != 0) lv->resample = lv->register_module("upsample", conv(cur, cur, 3));
    ups[i] = lv;
  }
  up = register_module("up", torch::nn::ModuleList());
  for (auto& lv : ups) up->push_back(lv);
  norm_out = register_module("norm_out", group_norm(op.groups, cur, op.norm_eps));
  conv_out = register_module("conv_out", conv(cur, op.in_channels * (op.learn_sigma ? 2 : 1), 3, 1, 0.0));
}

at::Tensor UNet::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  const auto& op = options_;
  if (x.dim() != 4 || x.size(1) != op.in_channels)
    throw InvalidArgument("the U-Net expects images [B, " + std::to_string(op.in_channels) + ", H, W], got " +
                          std::string(c10::str(x.sizes())));
  auto temb = temb_dense1(F::silu(temb_dense0(timestep_embedding(t, op.base_channels, op.flip_sin_to_cos, op.freq_shift, op.timestep_scale).to(x.dtype()))));
  if (op.num_classes > 0) {
    auto labels = y.defined() ? y : at::full({x.size(0)}, op.num_classes, t.options());
    temb = temb + class_emb(labels);
  }
  auto act = F::silu(temb);  // every block applies SiLU before its projection of temb

  // bf16: activations in bfloat16 from the first convolution to the last normalisation (ComputePrecision).
  const bool reduced = compute_ == ComputePrecision::bf16 && x.scalar_type() == at::kFloat;
  auto* w = weights_.get();
  // On the CPU the activations run channels-last (NHWC): oneDNN's convolutions are faster so, and the fused
  // GroupNorm keeps the layout (LibTorch's own GroupNorm is slow on it). docs/PERFORMANCE.md, change 4.
  const bool nhwc = x.device().is_cpu() && x.scalar_type() == at::kFloat;
  auto h0 = conv_in_type(conv_in, reduced ? x.to(at::kBFloat16) : x, w);
  std::vector<at::Tensor> hs = {nhwc ? h0.contiguous(at::MemoryFormat::ChannelsLast) : h0};
  for (size_t i = 0; i < down->size(); ++i) {
    auto& lv = *down[i]->as<LevelImpl>();
    for (size_t j = 0; j < lv.block->size(); ++j) {
      auto h = lv.block[j]->as<ResBlockImpl>()->forward(hs.back(), act);
      if (!lv.attn->is_empty()) h = lv.attn[j]->as<AttnBlockImpl>()->forward(h);
      hs.push_back(h);
    }
    if (lv.resample)
      hs.push_back(conv_in_type(lv.resample,
                                op.downsample_padding == DownsamplePadding::tf_same
                                    ? at::constant_pad_nd(hs.back(), {0, 1, 0, 1}, 0)
                                    : hs.back(),
                                w));
  }
  auto h = mid->block1(hs.back(), act);
  if (mid->attn1) h = mid->attn1(h);
  h = mid->block2(h, act);
  for (int64_t i = static_cast<int64_t>(up->size()) - 1; i >= 0; --i) {
    auto& lv = *up[i]->as<LevelImpl>();
    for (size_t j = 0; j < lv.block->size(); ++j) {
      h = lv.block[j]->as<ResBlockImpl>()->forward(at::cat({h, hs.back()}, 1), act);
      hs.pop_back();
      if (!lv.attn->is_empty()) h = lv.attn[j]->as<AttnBlockImpl>()->forward(h);
    }
    if (lv.resample) {
      // Nearest ×2, or to the matching skip's size when the input side is not a power of two (e.g. 28).
      const auto& skip = hs.back();
      h = F::interpolate(h, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{skip.size(2), skip.size(3)})
                                .mode(torch::kNearest));
      h = conv_in_type(lv.resample, h, w);
    }
  }
  // The output convolution (few channels, cheap) and the output in x's type.
  return conv_out(norm_act(norm_out, h).to(x.scalar_type())).contiguous();  // NCHW out, whatever ran inside
}

void UNet::set_attention_precision(AttentionPrecision p) {
  for (auto& m : modules(/*include_self=*/false))
    if (auto* a = dynamic_cast<AttnBlockImpl*>(m.get())) a->precision = p;
}

void UNet::set_compute_precision(ComputePrecision p) {
  compute_ = p;
  weights_ = p == ComputePrecision::fp32 ? nullptr : std::make_shared<WeightCache>();
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* r = dynamic_cast<ResBlockImpl*>(m.get())) r->weights = weights_;
    if (auto* a = dynamic_cast<AttnBlockImpl*>(m.get())) a->weights = weights_;
  }
}

nlohmann::json UNet::config() const { return options_.to_json(); }

}  // namespace ddpm

namespace ddpm {

double UNet::memory_per_item(bool training) const {
  const UNetCost c = unet_cost(options_, options_.image_size);
  return training ? c.training_bytes() : c.inference_bytes();
}

}  // namespace ddpm

#include "ddpm/models/unet_cost.h"

#include <algorithm>

namespace ddpm {

double ConvShape::flops() const {
  return 2.0 * static_cast<double>(in_channels * out_channels * kernel * kernel) * static_cast<double>(out_side * out_side);
}

UNetCost unet_cost(const UNetOptions& op, int64_t side) {
  UNetCost c;
  const int64_t ch = op.base_channels, temb = 4 * ch;
  auto conv = [&](int64_t in, int64_t out, int64_t k, int64_t stride, int64_t s) {
    // Stride 2 pads k/2 on both sides, or (tf_same) one pixel on the right/bottom only.
    const int64_t pad_total = op.downsample_padding == DownsamplePadding::tf_same ? 1 : 2 * (k / 2);
    const int64_t out_side = stride == 1 ? s : (s + pad_total - k) / stride + 1;
    ConvShape cs{in, out, k, stride, s, out_side};
    const double fin = static_cast<double>(in * s * s), fout = static_cast<double>(out * out_side * out_side);
    c.largest_floats = std::max({c.largest_floats, fin, fout});
    c.activation_floats += fin + fout;
    c.parameters += in * out * k * k + out;
    c.conv_flops += cs.flops();
    c.convs.push_back(cs);
    return out_side;
  };
  auto linear = [&](int64_t in, int64_t out) {
    c.parameters += in * out + out;
    c.linear_flops += 2.0 * static_cast<double>(in * out);
  };
  auto norm = [&](int64_t channels) { c.parameters += 2 * channels; };
  auto resblock = [&](int64_t in, int64_t out, int64_t s) {
    norm(in);
    conv(in, out, 3, 1, s);
    linear(temb, op.scale_shift_norm ? 2 * out : out);  // FiLM: [scale; shift]
    norm(out);
    conv(out, out, 3, 1, s);
    if (in != out) conv(in, out, 1, 1, s);
  };
  auto attention = [&](int64_t channels, int64_t s) {
    norm(channels);
    for (int i = 0; i < 3; ++i) conv(channels, channels, 1, 1, s);
    const double n = static_cast<double>(s * s);
    c.attention_scores = std::max(c.attention_scores, n * n * static_cast<double>(UNet::heads_for(op, channels, false)));
    c.attention_flops += 2 * (2.0 * n * n * static_cast<double>(channels));  // QᵀK and V·Wᵀ
    conv(channels, channels, 1, 1, s);                                       // proj_out
  };
  auto has_attn = [&](int64_t level) {
    const int64_t res = op.image_size >> level;
    return std::find(op.attention_resolutions.begin(), op.attention_resolutions.end(), res) !=
           op.attention_resolutions.end();
  };

  linear(ch, temb);
  linear(temb, temb);
  if (op.num_classes > 0) c.parameters += (op.num_classes + 1) * temb;
  conv(op.in_channels, ch, 3, 1, side);
  const int64_t L = static_cast<int64_t>(op.channel_mult.size());
  std::vector<int64_t> skip_ch = {ch}, skip_side = {side}, level_side(L);
  int64_t cur = ch, s = side;
  auto skip = [&] { c.skip_floats += static_cast<double>(skip_ch.back() * skip_side.back() * skip_side.back()); };
  skip();
  for (int64_t i = 0; i < L; ++i) {
    level_side[i] = s;
    const int64_t out = ch * op.channel_mult[i];
    for (int64_t j = 0; j < op.num_res_blocks; ++j) {
      resblock(cur, out, s);
      cur = out;
      if (has_attn(i)) attention(cur, s);
      skip_ch.push_back(cur);
      skip_side.push_back(s);
      skip();
    }
    if (i != L - 1) {
      s = conv(cur, cur, 3, 2, s);
      skip_ch.push_back(cur);
      skip_side.push_back(s);
      skip();
    }
  }
  resblock(cur, cur, s);
  if (op.mid_attention) attention(cur, s);
  resblock(cur, cur, s);
  for (int64_t i = L - 1; i >= 0; --i) {
    const int64_t out = ch * op.channel_mult[i];
    for (int64_t j = 0; j < op.num_res_blocks + 1; ++j) {
      resblock(cur + skip_ch.back(), out, s);
      skip_ch.pop_back();
      skip_side.pop_back();
      cur = out;
      if (has_attn(i)) attention(cur, s);
    }
    if (i != 0) {
      s = skip_side.back();  // upsampled to the matching skip's side, then a 3×3 convolution
      conv(cur, cur, 3, 1, s);
    }
  }
  norm(cur);
  conv(cur, op.in_channels * (op.learn_sigma ? 2 : 1), 3, 1, s);
  return c;
}

}  // namespace ddpm

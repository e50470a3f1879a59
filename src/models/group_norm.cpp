#include "ddpm/models/group_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "ddpm/errors.h"
#include "fused_kernels.h"

namespace ddpm {
namespace {

namespace K = kernels;

// The fused kernels take float tensors on the CPU, contiguous NCHW (any trailing dims) or channels_last 4-D.
// bfloat16 tensors (read and written as bfloat16, statistics in float) only channels_last 4-D, the layout the
// U-Net's bf16 path runs in.
bool fused_applies(const at::Tensor& x) {
  if (!x.device().is_cpu() || x.layout() != at::kStrided || x.dim() < 2) return false;
  const bool nhwc = x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (x.scalar_type() == at::kBFloat16) return nhwc;
  return x.scalar_type() == at::kFloat && (x.is_contiguous() || nhwc);
}

// The fused kernels' element type for x: float, or bfloat16 as its 16 raw bits.
template <class T>
T* elements(const at::Tensor& x) {
  if constexpr (std::is_same_v<std::remove_const_t<T>, float>)
    return x.data_ptr<float>();
  else
    return reinterpret_cast<T*>(x.data_ptr<at::BFloat16>());
}

bool channels_last(const at::Tensor& x) { return !x.is_contiguous(); }  // given fused_applies(x)

at::MemoryFormat format_of(const at::Tensor& x) {
  return channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

struct Shape {
  int64_t N, C, G, D, S;  // batch, channels, groups, channels per group, spatial positions
};

Shape shape_of(const at::Tensor& x, int64_t groups) {
  const int64_t N = x.size(0), C = x.size(1);
  return {N, C, groups, C / groups, N * C == 0 ? 0 : x.numel() / (N * C)};
}

// y = SiLU((x − μ)/σ · γ + β) (or without SiLU) with per-(n, g) mean and 1/σ ([N, G] float, kept for backward).
// Each image group (NCHW) or image (channels_last) is normalised right after its statistics, while it is in cache.
template <class T>
void normalize_rows(const at::Tensor& x, at::Tensor& y, const Shape& s, const at::Tensor& weight,
                    const at::Tensor& bias, const at::Tensor& shift, double eps, bool silu, at::Tensor& mean,
                    at::Tensor& rstd);

at::Tensor normalize(const at::Tensor& x, const Shape& s, const at::Tensor& weight, const at::Tensor& bias,
                     const at::Tensor& shift, double eps, bool silu, at::Tensor& mean, at::Tensor& rstd) {
  auto y = at::empty_like(x, format_of(x));
  mean = at::empty({s.N, s.G}, x.options().dtype(at::kFloat));
  rstd = at::empty({s.N, s.G}, x.options().dtype(at::kFloat));
  if (x.scalar_type() == at::kBFloat16) {
    normalize_rows<uint16_t>(x, y, s, weight, bias, shift, eps, silu, mean, rstd);
    return y;
  }
  if (!channels_last(x)) {
    const float *px = x.data_ptr<float>(), *pw = weight.data_ptr<float>(), *pbias = bias.data_ptr<float>(),
                *pe = shift.data_ptr<float>();
    float *py = y.data_ptr<float>(), *pm = mean.data_ptr<float>(), *pr = rstd.data_ptr<float>();
    const double M = static_cast<double>(s.D * s.S);
    const int64_t len = s.D * s.S;
    at::parallel_for(0, s.N * s.G, std::max<int64_t>(1, 16384 / std::max<int64_t>(len, 1)), [&](int64_t b0, int64_t e) {
      for (int64_t i = b0; i < e; ++i) {
        // The group's channels are x + shift[n, c]: sums over x, the shift added per channel.
        const float* chunk = px + i * len;
        const float* ei = pe + (i / s.G) * s.C + (i % s.G) * s.D;
        double total = 0;
        for (int64_t j = 0; j < s.D; ++j) total += K::sum(chunk + j * s.S, s.S) + static_cast<double>(s.S) * ei[j];
        const float m = static_cast<float>(total / M);
        double ss = 0;
        for (int64_t j = 0; j < s.D; ++j) ss += K::sum_sq_dev(chunk + j * s.S, s.S, m - ei[j]);
        const float r = static_cast<float>(1.0 / std::sqrt(ss / M + eps));
        pm[i] = m;
        pr[i] = r;
        for (int64_t j = 0; j < s.D; ++j) {
          const int64_t c = (i % s.G) * s.D + j;
          const float a = r * pw[c];
          K::affine_channel(chunk + j * s.S, py + i * len + j * s.S, s.S, a, pbias[c] + (ei[j] - m) * a, silu);
        }
      }
    });
    return y;
  }
  normalize_rows<float>(x, y, s, weight, bias, shift, eps, silu, mean, rstd);
  return y;
}

// Channels-last: each image's statistics, then its output, per thread.
template <class T>
void normalize_rows(const at::Tensor& x, at::Tensor& y, const Shape& s, const at::Tensor& weight,
                    const at::Tensor& bias, const at::Tensor& shift, double eps, bool silu, at::Tensor& mean,
                    at::Tensor& rstd) {
  const T* px = elements<T>(x);
  T* py = elements<T>(y);
  const float *pw = weight.data_ptr<float>(), *pbias = bias.data_ptr<float>(), *pe = shift.data_ptr<float>();
  float *pm = mean.data_ptr<float>(), *pr = rstd.data_ptr<float>();
  const double M = static_cast<double>(s.D * s.S);
  at::parallel_for(0, s.N, 1, [&](int64_t b0, int64_t e) {
    std::vector<double> acc(s.C);
    std::vector<float> dev(s.C), a(s.C), b(s.C);
    auto group_sum = [&](int64_t g) {  // Σ over group g's channels of acc
      double t = 0;
      for (int64_t c = g * s.D; c < (g + 1) * s.D; ++c) t += acc[c];
      return t;
    };
    for (int64_t n = b0; n < e; ++n) {
      const T* xn = px + n * s.S * s.C;
      const float* en = pe + n * s.C;
      std::fill(acc.begin(), acc.end(), 0.0);
      K::row_sums(xn, s.S, s.C, nullptr, acc.data());
      for (int64_t c = 0; c < s.C; ++c) acc[c] += static_cast<double>(s.S) * en[c];
      for (int64_t g = 0; g < s.G; ++g) {
        pm[n * s.G + g] = static_cast<float>(group_sum(g) / M);
        for (int64_t c = g * s.D; c < (g + 1) * s.D; ++c) dev[c] = pm[n * s.G + g] - en[c];  // x − dev = x + e − μ
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      K::row_sums(xn, s.S, s.C, dev.data(), acc.data());
      for (int64_t g = 0; g < s.G; ++g) {
        const float r = static_cast<float>(1.0 / std::sqrt(group_sum(g) / M + eps));
        pr[n * s.G + g] = r;
        for (int64_t c = g * s.D; c < (g + 1) * s.D; ++c) {
          a[c] = r * pw[c];
          b[c] = pbias[c] - dev[c] * a[c];  // β + (e − μ) a
        }
      }
      K::affine_rows(xn, py + n * s.S * s.C, s.S, s.C, a.data(), b.data(), silu);
    }
  });
}

// Gradients of normalize() for the input, γ and β.
void backward_pass(const at::Tensor& x, const at::Tensor& dout_in, const Shape& s, const at::Tensor& weight,
                   const at::Tensor& bias, const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& rstd,
                   bool silu, at::Tensor& dx, at::Tensor& dweight, at::Tensor& dbias) {
  auto dout = dout_in.contiguous(format_of(x));
  dx = at::empty_like(x, format_of(x));
  auto sg = at::zeros({s.N, s.C}, x.options().dtype(at::kDouble));   // Σ g per (n, c)
  auto sgx = at::zeros({s.N, s.C}, x.options().dtype(at::kDouble));  // Σ g (x − μ) per (n, c)
  auto a = (rstd.repeat_interleave(s.D, 1) * weight.unsqueeze(0)).contiguous();
  // Per (n, c): the mean as seen from x (μ − e), so that x − it = x + e − μ; and b = β + (e − μ) a.
  auto meanc = (mean.repeat_interleave(s.D, 1) - shift).contiguous();
  auto b = (bias.unsqueeze(0) - meanc * a).contiguous();
  const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>(), *pmc = meanc.data_ptr<float>(),
              *pr = rstd.data_ptr<float>(), *pw = weight.data_ptr<float>();
  double *psg = sg.data_ptr<double>(), *psgx = sgx.data_ptr<double>();
  const double M = static_cast<double>(s.D * s.S);
  // With g = ∂L/∂y (through SiLU) and x̂ = (x − μ)/σ:
  //   ∂L/∂x = (1/σ)(γ_c g − (1/M) Σ_group γ g − x̂ (1/M) Σ_group γ g x̂) = k1 g + k2 x + k3 per channel
  // (x̂ = (x − (μ − e_c))/σ, so k3 carries the channel's μ − e_c).
  auto coefficients = [&](int64_t n, int64_t grp, float* k1, float* k2, float* k3, int64_t stride) {
    double A = 0, B = 0;
    for (int64_t c = grp * s.D; c < (grp + 1) * s.D; ++c) {
      A += pw[c] * psg[n * s.C + c];
      B += pw[c] * psgx[n * s.C + c];
    }
    const double r = pr[n * s.G + grp];
    for (int64_t j = 0; j < s.D; ++j) {
      const int64_t c = grp * s.D + j;
      k1[j * stride] = static_cast<float>(r * pw[c]);
      k2[j * stride] = static_cast<float>(-r * r * r * B / M);
      k3[j * stride] = static_cast<float>(r * r * r * B / M * pmc[n * s.C + c] - r * A / M);
    }
  };
  // Channels-last, float or bfloat16: g goes to a float buffer per image (for float it could be dx itself, but one
  // image's buffer stays in cache), then dx = k1·g + k2·x + k3 in x's type.
  auto rows = [&](auto* px, auto* pd, auto* pdx) {
    at::parallel_for(0, s.N, 1, [&](int64_t b0, int64_t e) {
      std::vector<float> k1(s.C), k2(s.C), k3(s.C), g(s.S * s.C);
      for (int64_t n = b0; n < e; ++n) {
        const int64_t off = n * s.S * s.C;
        K::grad_rows(px + off, pd + off, g.data(), s.S, s.C, pa + n * s.C, pb + n * s.C, pmc + n * s.C, silu,
                     psg + n * s.C, psgx + n * s.C);
        for (int64_t grp = 0; grp < s.G; ++grp)
          coefficients(n, grp, k1.data() + grp * s.D, k2.data() + grp * s.D, k3.data() + grp * s.D, 1);
        K::combine_rows(g.data(), px + off, pdx + off, s.S, s.C, k1.data(), k2.data(), k3.data());
      }
    });
  };
  if (x.scalar_type() == at::kBFloat16) {
    rows(elements<const uint16_t>(x), elements<const uint16_t>(dout), elements<uint16_t>(dx));
  } else if (channels_last(x)) {
    rows(x.data_ptr<float>(), dout.data_ptr<float>(), dx.data_ptr<float>());
  } else {
    const float *px = x.data_ptr<float>(), *pd = dout.data_ptr<float>();
    float* pdx = dx.data_ptr<float>();
    at::parallel_for(0, s.N * s.G, 1, [&](int64_t b0, int64_t e) {
      std::vector<float> k(3 * s.D);
      for (int64_t i = b0; i < e; ++i) {
        const int64_t n = i / s.G, grp = i % s.G;
        for (int64_t c = grp * s.D; c < (grp + 1) * s.D; ++c) {
          const int64_t off = (n * s.C + c) * s.S;
          K::grad_channel(px + off, pd + off, pdx + off, s.S, pa[n * s.C + c], pb[n * s.C + c], pmc[n * s.C + c],
                          silu, psg + n * s.C + c, psgx + n * s.C + c);
        }
        coefficients(n, grp, k.data(), k.data() + 1, k.data() + 2, 3);
        for (int64_t j = 0; j < s.D; ++j) {
          const int64_t off = (n * s.C + grp * s.D + j) * s.S;
          K::combine_channel(pdx + off, px + off, pdx + off, s.S, k[3 * j], k[3 * j + 1], k[3 * j + 2]);
        }
      }
    });
  }
  // ∂L/∂β_c = Σ_n Σ g; ∂L/∂γ_c = Σ_n Σ g x̂ = Σ_n (1/σ_{n,g}) Σ g (x − μ).
  dbias = sg.sum(0).to(at::kFloat);
  dweight = (sgx * rstd.to(at::kDouble).repeat_interleave(s.D, 1)).sum(0).to(at::kFloat);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GroupNormSiLU : public torch::autograd::Function<GroupNormSiLU> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& shift, double eps, bool silu) {
    at::Tensor mean, rstd;
    auto y = normalize(x, shape_of(x, groups), weight, bias, shift, eps, silu, mean, rstd);
    ctx->save_for_backward({x, weight, bias, shift, mean, rstd});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["silu"] = silu;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const Shape s = shape_of(x, ctx->saved_data["groups"].toInt());
    at::Tensor dx, dweight, dbias;
    backward_pass(x, grads[0], s, saved[1], saved[2], saved[3], saved[4], saved[5], ctx->saved_data["silu"].toBool(),
                  dx, dweight, dbias);
    // ∂L/∂e[n, c] = Σ over the positions of ∂L/∂x[n, c, ·].
    std::vector<int64_t> positions(x.dim() - 2);
    for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int64_t>(i) + 2;
    auto dshift = saved[3].requires_grad() ? dx.sum(positions, false, at::kFloat) : at::Tensor();
    return {dx, at::Tensor(), dweight, dbias, dshift, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor group_norm_silu(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                           double eps, bool silu, const at::Tensor& shift) {
  RECORD_FUNCTION("ddpm::group_norm_silu", std::vector<c10::IValue>());
  if (x.dim() < 2 || groups < 1 || x.size(1) % groups != 0)
    throw InvalidArgument("group_norm_silu: expected [N, C, ...] with C divisible by " + std::to_string(groups) +
                          " groups, got " + std::string(c10::str(x.sizes())));
  if (shift.defined() && (shift.dim() != 2 || shift.size(0) != x.size(0) || shift.size(1) != x.size(1)))
    throw InvalidArgument("group_norm_silu: shift must be [N, C] = [" + std::to_string(x.size(0)) + ", " +
                          std::to_string(x.size(1)) + "], got " + std::string(c10::str(shift.sizes())));
  if (!fused_applies(x) || x.numel() == 0 || (shift.defined() && shift.scalar_type() != at::kFloat)) {
    // Reduced-precision inputs are normalised in float (statistics of bfloat16 values in bfloat16 lose too much)
    // and returned in their own type.
    const bool reduced = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
    auto xs = reduced ? x.to(at::kFloat) : x;
    if (shift.defined()) {
      std::vector<int64_t> shape(x.dim(), 1);
      shape[0] = x.size(0);
      shape[1] = x.size(1);
      xs = xs + shift.reshape(shape);
    }
    auto y = at::group_norm(xs, groups, weight, bias, eps);
    if (silu) y = at::silu(y);
    return reduced ? y.to(x.scalar_type()) : y;
  }
  const int64_t C = x.size(1);
  const auto fopt = x.options().dtype(at::kFloat);
  const auto w = weight.defined() ? weight.contiguous() : at::ones({C}, fopt);
  const auto b = bias.defined() ? bias.contiguous() : at::zeros({C}, fopt);
  if (!w.device().is_cpu() || w.scalar_type() != at::kFloat || w.numel() != C || b.numel() != C)
    throw InvalidArgument("group_norm_silu: weight and bias must be float tensors of " + std::to_string(C) + " values");
  const auto e = shift.defined() ? shift.contiguous() : at::zeros({x.size(0), C}, fopt);
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || w.requires_grad() || b.requires_grad() || e.requires_grad());
  if (!grad) {
    at::Tensor mean, rstd;
    return normalize(x, shape_of(x, groups), w, b, e, eps, silu, mean, rstd);
  }
  return GroupNormSiLU::apply(x, groups, w, b, e, eps, silu);
}

}  // namespace ddpm

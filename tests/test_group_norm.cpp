// The fused GroupNorm(+SiLU) against GroupNorm written out in double: per-group mean and biased variance over the
// group's channels and positions, the affine map, SiLU — values and, through double-precision autograd, gradients.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "ddpm/errors.h"
#include "ddpm/models/group_norm.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {

at::Tensor reference(const at::Tensor& x, int64_t G, const at::Tensor& w, const at::Tensor& b, double eps, bool silu) {
  const int64_t N = x.size(0), C = x.size(1);
  auto xs = x.reshape({N, G, -1});
  auto mean = xs.mean(-1, true);
  auto var = (xs - mean).pow(2).mean(-1, true);
  auto xhat = ((xs - mean) / (var + eps).sqrt()).reshape(x.sizes());
  std::vector<int64_t> bshape(x.dim(), 1);
  bshape[1] = C;
  auto y = xhat * w.reshape(bshape) + b.reshape(bshape);
  return silu ? y * at::sigmoid(y) : y;
}

struct Result {
  at::Tensor y, dx, dw, db;
};

// Output and gradients of sum(y · up) for the fused op (float, in x's layout) and the reference (double).
Result run(const at::Tensor& x, int64_t G, const at::Tensor& w, const at::Tensor& b, const at::Tensor& up, bool silu,
           bool fused, bool channels_last = false) {
  auto xx = fused ? x.clone() : x.to(at::kDouble);
  if (channels_last) xx = xx.contiguous(at::MemoryFormat::ChannelsLast);
  xx.requires_grad_(true);
  auto ww = (fused ? w.clone() : w.to(at::kDouble)).requires_grad_(true);
  auto bb = (fused ? b.clone() : b.to(at::kDouble)).requires_grad_(true);
  auto y = fused ? group_norm_silu(xx, G, ww, bb, 1e-6, silu) : reference(xx, G, ww, bb, 1e-6, silu);
  auto grads = torch::autograd::grad({(y * up.to(y.scalar_type())).sum()}, {xx, ww, bb});
  return {y.detach(), grads[0], grads[1], grads[2]};
}

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return max_abs_diff(a, b) / std::max(1e-12, b.abs().max().item<double>());
}

void expect_close(const Result& f, const Result& r, double tol) {
  EXPECT_LT(rel_err(f.y, r.y), tol) << "output";
  EXPECT_LT(rel_err(f.dx, r.dx), tol) << "d/dx";
  EXPECT_LT(rel_err(f.dw, r.dw), tol) << "d/dweight";
  EXPECT_LT(rel_err(f.db, r.db), tol) << "d/dbias";
}

}  // namespace

TEST(GroupNorm, FusedEqualsTheDoubleFormulaWithGradients) {
  auto g = gen(1);
  // Odd spatial sizes (35 positions) so the vector loops' remainders are exercised.
  for (bool silu : {true, false})
    for (bool cl : {false, true}) {
      auto x = at::randn({3, 12, 5, 7}, g) * 2 + 0.5, w = at::randn({12}, g), b = at::randn({12}, g);
      auto up = at::randn({3, 12, 5, 7}, g);
      auto f = run(x, 4, w, b, up, silu, true, cl), r = run(x, 4, w, b, up, silu, false);
      SCOPED_TRACE(std::string(silu ? "silu" : "plain") + (cl ? " channels_last" : " nchw"));
      expect_close(f, r, 2e-5);
      // The output keeps the input's layout.
      EXPECT_EQ(f.y.is_contiguous(at::MemoryFormat::ChannelsLast), cl);
      EXPECT_EQ(f.dx.is_contiguous(at::MemoryFormat::ChannelsLast), cl);
    }
}

TEST(GroupNorm, LargeOffsetsAndOtherShapes) {
  auto g = gen(2);
  // A mean 300 standard deviations from zero: the statistics must not lose the variance.
  {
    auto x = at::randn({2, 8, 16, 16}, g) + 300.0, w = at::randn({8}, g), b = at::randn({8}, g);
    auto up = at::randn({2, 8, 16, 16}, g);
    expect_close(run(x, 2, w, b, up, true, true), run(x, 2, w, b, up, true, false), 1e-3);
    expect_close(run(x, 2, w, b, up, true, true, true), run(x, 2, w, b, up, true, false), 1e-3);
  }
  // [N, C, L] and one group per channel.
  {
    auto x = at::randn({4, 6, 33}, g), w = at::randn({6}, g), b = at::randn({6}, g), up = at::randn({4, 6, 33}, g);
    expect_close(run(x, 6, w, b, up, true, true), run(x, 6, w, b, up, true, false), 2e-5);
    expect_close(run(x, 1, w, b, up, false, true), run(x, 1, w, b, up, false, false), 2e-5);
  }
}

TEST(GroupNorm, AShiftIsAddedAtEveryPositionBeforeNormalising) {
  // GroupNorm(x + e[:, :, None, None]) with e per (image, channel), as the U-Net adds its timestep embedding;
  // values and the gradients of x, γ, β and e against the same written out in double.
  auto g = gen(4);
  for (bool cl : {false, true}) {
    auto x = at::randn({3, 8, 6, 5}, g), w = at::randn({8}, g), b = at::randn({8}, g), e = at::randn({3, 8}, g) * 3;
    auto up = at::randn({3, 8, 6, 5}, g);
    auto xf = (cl ? x.contiguous(at::MemoryFormat::ChannelsLast) : x.clone()).requires_grad_(true);
    auto wf = w.clone().requires_grad_(true), bf = b.clone().requires_grad_(true), ef = e.clone().requires_grad_(true);
    auto yf = group_norm_silu(xf, 2, wf, bf, 1e-6, true, ef);
    auto gf = torch::autograd::grad({(yf * up).sum()}, {xf, wf, bf, ef});
    auto xd = x.to(at::kDouble).requires_grad_(true), wd = w.to(at::kDouble).requires_grad_(true);
    auto bd = b.to(at::kDouble).requires_grad_(true), ed = e.to(at::kDouble).requires_grad_(true);
    auto yd = reference(xd + ed.reshape({3, 8, 1, 1}), 2, wd, bd, 1e-6, true);
    auto gd = torch::autograd::grad({(yd * up.to(at::kDouble)).sum()}, {xd, wd, bd, ed});
    SCOPED_TRACE(cl ? "channels_last" : "nchw");
    EXPECT_LT(rel_err(yf.detach(), yd.detach()), 2e-5);
    for (size_t i = 0; i < 4; ++i) EXPECT_LT(rel_err(gf[i], gd[i]), 2e-5) << "gradient " << i;
    {
      c10::InferenceMode guard;
      EXPECT_LT(rel_err(group_norm_silu(x, 2, w, b, 1e-6, true, e), yd.detach()), 2e-5);
    }
  }
  auto x = at::randn({3, 8, 6, 5}, g);
  EXPECT_THROW(group_norm_silu(x, 2, at::Tensor(), at::Tensor(), 1e-6, true, at::zeros({3, 4})), InvalidArgument);
}

TEST(GroupNorm, InferencePathsAndFallbackAgree) {
  auto g = gen(3);
  auto x = at::randn({2, 8, 9, 9}, g), w = at::randn({8}, g), b = at::randn({8}, g);
  auto expected = reference(x.to(at::kDouble), 4, w.to(at::kDouble), b.to(at::kDouble), 1e-6, true);
  {
    c10::InferenceMode guard;
    EXPECT_LT(rel_err(group_norm_silu(x, 4, w, b, 1e-6), expected), 2e-5);
  }
  // A non-contiguous input takes LibTorch's GroupNorm and SiLU; double inputs too.
  auto xt = x.transpose(2, 3);
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_LT(rel_err(group_norm_silu(xt, 4, w, b, 1e-6),
                    reference(xt.to(at::kDouble), 4, w.to(at::kDouble), b.to(at::kDouble), 1e-6, true)),
            2e-5);
  EXPECT_LT(rel_err(group_norm_silu(x.to(at::kDouble), 4, w.to(at::kDouble), b.to(at::kDouble), 1e-6), expected), 1e-12);
  // No weight and bias: γ = 1, β = 0.
  EXPECT_LT(rel_err(group_norm_silu(x, 4, at::Tensor(), at::Tensor(), 1e-6, false),
                    reference(x.to(at::kDouble), 4, at::ones({8}, at::kDouble), at::zeros({8}, at::kDouble), 1e-6, false)),
            2e-5);
  EXPECT_THROW(group_norm_silu(x, 3, w, b, 1e-6), InvalidArgument);
}

TEST(GroupNorm, Bfloat16ChannelsLastReadsAndWritesBfloat16WithFloatStatistics) {
  // bfloat16 in and out, statistics and arithmetic in float. The reference is the double formula on the same
  // (exactly representable) bfloat16 values, with an upstream gradient that is itself bfloat16: the output and dx
  // then differ from it only by their final rounding to bfloat16 (≤ 2⁻⁸ relative, 3.9e-3 of the largest value), while
  // dγ and dβ, accumulated in float and double, stay at float accuracy.
  auto g = gen(6);
  for (bool silu : {true, false})
    for (bool with_shift : {false, true}) {
      SCOPED_TRACE(std::string(silu ? "silu" : "plain") + (with_shift ? " shift" : ""));
      auto xb = (at::randn({3, 16, 5, 7}, g) * 2 + 0.5).to(at::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
      auto w = at::randn({16}, g), b = at::randn({16}, g), e = at::randn({3, 16}, g);
      auto upb = at::randn({3, 16, 5, 7}, g).to(at::kBFloat16);
      auto xf = xb.clone().requires_grad_(true);
      auto wf = w.clone().requires_grad_(true), bf = b.clone().requires_grad_(true), ef = e.clone().requires_grad_(true);
      auto y = group_norm_silu(xf, 4, wf, bf, 1e-6, silu, with_shift ? ef : at::Tensor());
      ASSERT_EQ(y.scalar_type(), at::kBFloat16);
      EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
      std::vector<at::Tensor> inputs = {xf, wf, bf};
      if (with_shift) inputs.push_back(ef);
      auto gf = torch::autograd::grad({(y * upb).sum()}, inputs);
      ASSERT_EQ(gf[0].scalar_type(), at::kBFloat16);
      auto xd = xb.to(at::kDouble).requires_grad_(true), wd = w.to(at::kDouble).requires_grad_(true);
      auto bd = b.to(at::kDouble).requires_grad_(true), ed = e.to(at::kDouble).requires_grad_(true);
      auto yd = reference(with_shift ? xd + ed.reshape({3, 16, 1, 1}) : xd, 4, wd, bd, 1e-6, silu);
      std::vector<at::Tensor> din = {xd, wd, bd};
      if (with_shift) din.push_back(ed);
      auto gd = torch::autograd::grad({(yd * upb.to(at::kDouble)).sum()}, din);
      const double ey = rel_err(y.detach(), yd.detach()), edx = rel_err(gf[0], gd[0]);
      EXPECT_LT(ey, 4e-3);
      EXPECT_GT(ey, 1e-6);  // it was rounded to bfloat16
      EXPECT_LT(edx, 4e-3);
      EXPECT_LT(rel_err(gf[1], gd[1]), 2e-5) << "d/dweight";
      EXPECT_LT(rel_err(gf[2], gd[2]), 2e-5) << "d/dbias";
      // The shift's gradient sums dx over positions in float: within the bfloat16 rounding of dx.
      if (with_shift) EXPECT_LT(rel_err(gf[3], gd[3]), 5e-3) << "d/dshift";
      {
        c10::InferenceMode guard;  // the no-gradient path gives the same bits
        EXPECT_TRUE(at::equal(group_norm_silu(xb, 4, w, b, 1e-6, silu, with_shift ? e : at::Tensor()), y.detach()));
      }
    }
  // bfloat16 in another layout falls back to the float computation and still returns bfloat16.
  auto x = at::randn({2, 8, 6, 6}, g).to(at::kBFloat16);
  auto w = at::randn({8}, g), b = at::randn({8}, g);
  auto y = group_norm_silu(x, 4, w, b, 1e-6);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_LT(rel_err(y, reference(x.to(at::kDouble), 4, w.to(at::kDouble), b.to(at::kDouble), 1e-6, true)), 4e-3);
}

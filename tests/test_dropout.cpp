// The hashed dropout: keep rate and scale (binomial bounds), independence of neighbouring decisions, reproducibility
// from torch::manual_seed, and a backward that applies exactly the forward's mask, in either memory layout.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/utils.h>

#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/models/dropout.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

TEST(Dropout, KeepsTheRightFractionScaledAndIndependently) {
  torch::manual_seed(0);
  const double p = 0.1;
  auto x = at::ones({64, 64, 32, 32});  // 4.2M elements
  auto y = hashed_dropout(x, p, true);
  auto kept = (y != 0).to(at::kDouble);
  const double n = static_cast<double>(x.numel()), rate = kept.mean().item<double>();
  // Binomial: standard deviation √(p(1−p)/n) ≈ 1.5e-4; 6 of them.
  EXPECT_NEAR(rate, 0.9, 6 * std::sqrt(p * (1 - p) / n));
  // Kept values are exactly 1/(1 − p).
  EXPECT_LT((y.masked_select(y != 0) - 1.0 / (1.0 - p)).abs().max().item<double>(), 1e-6);
  // Neighbouring elements (the hash's consecutive counters) and rows are uncorrelated: P(both kept) = 0.81.
  auto flat = kept.reshape({-1});
  const double both = (flat.slice(0, 1) * flat.slice(0, 0, -1)).mean().item<double>();
  EXPECT_NEAR(both, 0.81, 6 * std::sqrt(0.81 * 0.19 / n));
  const double rows = (flat.slice(0, 32) * flat.slice(0, 0, -32)).mean().item<double>();
  EXPECT_NEAR(rows, 0.81, 6 * std::sqrt(0.81 * 0.19 / n));
  // Per-channel keep rates stay within binomial bounds too (no structure by position).
  auto per_channel = kept.mean({0, 2, 3});
  const double sd = std::sqrt(p * (1 - p) / (64 * 32 * 32));
  EXPECT_LT((per_channel - 0.9).abs().max().item<double>(), 6 * sd);
}

TEST(Dropout, ReproducibleFromTheSeedAndIdentityWhenNotTraining) {
  auto x = at::randn({4, 8, 5, 5});
  torch::manual_seed(3);
  auto a = hashed_dropout(x, 0.3, true);
  auto b = hashed_dropout(x, 0.3, true);
  torch::manual_seed(3);
  auto c = hashed_dropout(x, 0.3, true);
  EXPECT_TRUE(at::equal(a, c));
  EXPECT_FALSE(at::equal(a, b));  // a fresh seed per call
  EXPECT_TRUE(at::equal(hashed_dropout(x, 0.3, false), x));
  EXPECT_TRUE(at::equal(hashed_dropout(x, 0.0, true), x));
  EXPECT_THROW(hashed_dropout(x, 1.0, true), InvalidArgument);
}

TEST(Dropout, BackwardAppliesTheForwardMaskInBothLayouts) {
  for (bool cl : {false, true}) {
    torch::manual_seed(5);
    auto x = at::rand({3, 6, 7, 9}) + 1.0;  // nonzero, so the mask can be read off the output
    if (cl) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    x.requires_grad_(true);
    auto y = hashed_dropout(x, 0.25, true);
    auto up = at::randn({3, 6, 7, 9});  // NCHW gradient, whatever x's layout
    auto g = torch::autograd::grad({(y * up).sum()}, {x})[0];
    auto mask = (y.detach() != 0).to(at::kFloat);
    EXPECT_LT(max_abs_diff(g, up * mask / 0.75), 1e-6) << (cl ? "channels_last" : "nchw");
    EXPECT_LT(max_abs_diff(y.detach(), x.detach() * mask / 0.75), 1e-6);
  }
}

TEST(Dropout, Bfloat16UsesTheSameMaskAndRounding) {
  // The same seed keeps the same elements as for float, and the scaled value is the float one rounded to bfloat16.
  for (bool cl : {false, true}) {
    auto x = at::randn({3, 6, 7, 9}).to(at::kBFloat16);
    if (cl) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    torch::manual_seed(11);
    auto yb = hashed_dropout(x, 0.3, true);
    torch::manual_seed(11);
    auto yf = hashed_dropout(x.to(at::kFloat).contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous),
                             0.3, true);
    ASSERT_EQ(yb.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(yb, yf.to(at::kBFloat16))) << (cl ? "channels_last" : "nchw");
    const double kept = (yf != 0).to(at::kDouble).mean().item<double>();
    EXPECT_NEAR(kept, 0.7, 0.05);
  }
}

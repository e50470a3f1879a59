#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/schedule.h"
#include "golden_spacing.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

TEST(Schedule, LinearMatchesDdpmEndpointsAndScalesWithT) {
  for (int64_t T : {1, 50, 100, 1000, 4000}) {
    auto b = make_betas(BetaSchedule::linear, T);
    auto ref = linear_betas(T);
    ASSERT_EQ(b.size(), size_t(T));
    for (int64_t i = 0; i < T; ++i) EXPECT_NEAR(b[i], ref[i], 1e-15) << T << " " << i;
  }
  auto b = make_betas(BetaSchedule::linear, 1000);
  EXPECT_DOUBLE_EQ(b.front(), 1e-4);
  EXPECT_DOUBLE_EQ(b.back(), 0.02);
}

TEST(Schedule, CosineAlphaBarFollowsItsClosedForm) {
  // Improved DDPM eq. 17: ᾱ_t = f(t)/f(0); where no β was capped the product reproduces it exactly.
  const int64_t T = 1000;
  auto ac = alphas_cumprod(make_betas(BetaSchedule::cosine, T));
  auto f = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
  for (int64_t i = 0; i < T - 5; ++i) EXPECT_NEAR(ac[i], f(double(i + 1) / T) / f(0), 1e-12) << i;
  for (double b : make_betas(BetaSchedule::cosine, T)) EXPECT_LE(b, 0.999);
}

TEST(Schedule, QuadraticAndSigmoidAreMonotoneAndEndNearZero) {
  for (auto s : {BetaSchedule::quadratic, BetaSchedule::sigmoid}) {
    auto b = make_betas(s, 1000);
    auto ac = alphas_cumprod(b);
    for (size_t i = 1; i < ac.size(); ++i) EXPECT_LT(ac[i], ac[i - 1]);
    EXPECT_LT(ac.back(), 0.01) << to_string(s);
    EXPECT_GT(ac.front(), 0.99) << to_string(s);
  }
  // Quadratic: √β evenly spaced between the linear end points.
  auto b = make_betas(BetaSchedule::quadratic, 1000);
  EXPECT_NEAR(std::sqrt(b[500]) - std::sqrt(b[499]), (std::sqrt(0.02) - std::sqrt(1e-4)) / 999, 1e-12);
}

TEST(Schedule, RejectsBadInput) {
  EXPECT_THROW(make_betas(BetaSchedule::linear, 0), InvalidArgument);
  EXPECT_THROW(make_betas(BetaSchedule::linear, 10), InvalidArgument);  // β_T = 2: not a diffusion
  EXPECT_THROW(diffusers_timesteps(999, 13, Spacing::trailing), InvalidArgument);  // would reach timestep -1
  EXPECT_THROW(parse_beta_schedule("cosin"), InvalidArgument);
  EXPECT_THROW(space_timesteps(1000, "ddim600"), InvalidArgument);  // no integer stride gives 600 steps
  EXPECT_THROW(space_timesteps(100, "200"), InvalidArgument);
  EXPECT_THROW(space_timesteps(100, "a,b"), InvalidArgument);
  EXPECT_THROW(respaced_timesteps(100, 0, "ddim"), InvalidArgument);
  EXPECT_THROW(respaced_timesteps(100, 10, "sideways"), InvalidArgument);
}

TEST(Schedule, RespacingReproducesTheKeptAlphaBarExactly) {
  auto full = Schedule::make(BetaSchedule::cosine, 1000);
  auto ac = alphas_cumprod(full.betas);
  for (const std::string spec : {"ddim50", "10,15,20", "7"}) {
    auto kept = space_timesteps(1000, spec);
    auto r = full.respace(kept);
    auto rac = alphas_cumprod(r.betas);
    ASSERT_EQ(rac.size(), kept.size());
    for (size_t i = 0; i < kept.size(); ++i) {
      EXPECT_NEAR(rac[i], ac[kept[i]], 1e-14 * std::max(1.0, 1 / ac[kept[i]]) * ac[kept[i]] + 1e-16) << spec;
      EXPECT_EQ(r.timestep_map[i], kept[i]);
    }
  }
  // Respacing a respaced schedule composes the maps.
  auto twice = full.respace(space_timesteps(1000, "ddim100")).respace({0, 10, 99});
  EXPECT_EQ(twice.timestep_map, (std::vector<int64_t>{0, 100, 990}));
}

TEST(Schedule, SpaceTimestepsMatchesImprovedDiffusion) {
  for (const auto& c : kImprovedDiffusionSpacing) EXPECT_EQ(space_timesteps(c.T, c.spec), c.steps) << c.T << " " << c.spec;
}

TEST(Schedule, DiffusersSpacingsMatchReference) {
  for (const auto& c : kDiffusersSpacing) {
    const auto colon = c.spec.find(':');
    const auto spacing = parse_spacing(c.spec.substr(0, colon));
    const int64_t n = std::stoll(c.spec.substr(colon + 1));
    EXPECT_EQ(diffusers_timesteps(c.T, n, spacing), c.steps) << c.T << " " << c.spec;
  }
}

TEST(Schedule, QuadraticSpacingIsDdimsCifarChoice) {
  // DDIM's seq = (linspace(0, √(0.8 T), S))², truncated: recomputed here term by term.
  for (int64_t S : {10, 20}) {
    auto got = quadratic_timesteps(1000, S);
    ASSERT_EQ(got.size(), size_t(S));
    for (int64_t i = 0; i < S; ++i) {
      const double r = std::sqrt(800.0) * double(i) / double(S - 1);
      EXPECT_EQ(got[i], int64_t(std::floor(r * r))) << S << " " << i;
    }
  }
  // With more steps than distinct squares near 0, the collisions are pushed apart and the order kept.
  auto many = respaced_timesteps(1000, 300, "quadratic");
  ASSERT_EQ(many.size(), 300u);
  for (size_t i = 1; i < many.size(); ++i) EXPECT_GT(many[i], many[i - 1]);
  EXPECT_EQ(many.back(), int64_t(std::floor(std::sqrt(800.0) * std::sqrt(800.0))));
}

TEST(Schedule, LogSnrSpacingIsEvenInLambda) {
  // (On the cosine schedule λ_{T-1} is extreme, since β is capped at 0.999: an even grid in λ from there is legal
  // but spends its steps near T, so only its shape is checked.)
  for (auto bs : {BetaSchedule::linear, BetaSchedule::cosine}) {
    auto ac = alphas_cumprod(make_betas(bs, 1000));
    auto lambda = [&](int64_t t) { return 0.5 * std::log(ac[t] / (1 - ac[t])); };
    for (int64_t S : {10, 20, 50}) {
      auto kept = respaced_timesteps(1000, S, "logsnr", ac);
      ASSERT_EQ(kept.size(), size_t(S));
      EXPECT_EQ(kept.front(), 0);
      EXPECT_EQ(kept.back(), 999);
      const double gap = (lambda(0) - lambda(999)) / double(S - 1);
      for (int64_t i = 1; i < S; ++i) {
        ASSERT_GT(kept[i], kept[i - 1]);
        if (bs != BetaSchedule::linear || S > 20) continue;  // at 50 steps λ's own gaps near t = 0 are wider
        const double step = lambda(kept[i - 1]) - lambda(kept[i]);
        EXPECT_GT(step, 0.5 * gap) << to_string(bs) << " " << S << " " << i;
        EXPECT_LT(step, 1.5 * gap) << to_string(bs) << " " << S << " " << i;
      }
    }
  }
  EXPECT_THROW(respaced_timesteps(1000, 20, "logsnr"), InvalidArgument);  // needs ᾱ
  EXPECT_THROW(respaced_timesteps(1000, 20, "cubic"), InvalidArgument);
}

#include <cmath>
#include <cstdio>

#include "ddpm/data/points.h"
#include "ddpm/errors.h"
#include "ddpm/models/exact.h"
#include "ddpm/samplers.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {

const double kMean = 0.1, kStd = 0.4;

Denoiser exact_gaussian(const GaussianDiffusion& base, int64_t dim = 1) {
  return ExactMixtureDenoiser(GaussianMixture::gaussian(kMean, kStd, dim), base.alphas_cumprod()).as_denoiser();
}

/// DDIM(η = 0) with the exact Gaussian denoiser is linear in x, so the sample std is the product of the per-step
/// slopes (x_T has std 1): derived here in plain double from SPEC §4 and §9.
double ddim_std_closed_form(const std::vector<double>& ac_full, const std::vector<int64_t>& kept) {
  const double s2 = kStd * kStd;
  double slope = 1.0;
  for (int64_t i = static_cast<int64_t>(kept.size()) - 1; i >= 0; --i) {
    const double a = ac_full[kept[i]], ap = i > 0 ? ac_full[kept[i - 1]] : 1.0;
    const double v = a * s2 + 1 - a;
    const double c1 = std::sqrt(a) * s2 / v;                  // ∂E[x0|x_t]/∂x_t
    const double e1 = (1 - std::sqrt(a) * c1) / std::sqrt(1 - a);  // ∂ε̂/∂x_t
    slope *= std::sqrt(ap) * c1 + std::sqrt(1 - ap) * e1;
  }
  return std::fabs(slope);
}

std::pair<double, double> moments(const at::Tensor& x) {
  auto d = x.to(at::kDouble);
  return {d.mean().item<double>(), d.std().item<double>()};
}

}  // namespace

TEST(Samplers, DdpmWithExactGaussianDenoiserRecoversTheData) {
  auto full = make_diffusion(1000, MeanType::eps, VarType::fixed_large);
  for (auto vt : {VarType::fixed_large, VarType::fixed_small}) {
    GaussianDiffusion d(Schedule::make(BetaSchedule::linear, 1000), MeanType::eps, vt);
    auto g = gen(10);
    auto x = ddpm_sample(d, exact_gaussian(full), at::randn({20000, 1}, g), g);
    auto [m, s] = moments(x);
    std::printf("DDPM 1000 steps %s: mean %.4f std %.4f\n", to_string(vt).c_str(), m, s);
    EXPECT_NEAR(m, kMean, 0.01) << to_string(vt);
    EXPECT_NEAR(s / kStd, 1.0, 0.02) << to_string(vt);
  }
}

TEST(Samplers, DdimStdMatchesReferenceAndClosedFormAtEveryStepCount) {
  // openai/improved-diffusion's DDIM with the same exact denoiser: N(0.1, 0.4²), T = 1000 linear, "ddimN" spacing.
  const std::vector<std::pair<int64_t, double>> reference = {{10, 0.281}, {20, 0.335}, {50, 0.373}, {100, 0.387},
                                                             {1000, 0.399}};
  auto full = make_diffusion(1000);
  auto base = Schedule::make(BetaSchedule::linear, 1000);
  auto ac_full = cumprod(linear_betas(1000));
  for (const auto& [steps, ref_std] : reference) {
    auto kept = space_timesteps(1000, "ddim" + std::to_string(steps));
    GaussianDiffusion d(base.respace(kept), MeanType::eps, VarType::fixed_large);
    auto g = gen(20 + steps);
    auto x = ddim_sample(d, exact_gaussian(full), at::randn({20000, 1}, g), 0.0, g);
    auto [m, s] = moments(x);
    const double exact = ddim_std_closed_form(ac_full, kept);
    std::printf("DDIM %4lld steps: mean %.4f std %.4f (closed form %.4f, reference %.3f)\n",
                static_cast<long long>(steps), m, s, exact, ref_std);
    EXPECT_NEAR(s, ref_std, 0.003) << steps;
    EXPECT_NEAR(s / exact, 1.0, 0.02) << steps;  // 20 000 samples: the std is known to ±0.5%
    if (steps == 1000) {
      EXPECT_NEAR(m, kMean, 0.01);
      EXPECT_NEAR(s / kStd, 1.0, 0.02);
    }
  }
}

TEST(Samplers, DdimEtaOneMatchesTheDataToo) {
  auto full = make_diffusion(1000);
  auto g = gen(30);
  auto x = ddim_sample(full, exact_gaussian(full), at::randn({20000, 1}, g), 1.0, g);
  auto [m, s] = moments(x);
  EXPECT_NEAR(m, kMean, 0.01);
  EXPECT_NEAR(s / kStd, 1.0, 0.02);
}

TEST(Samplers, DdimInversionThenSamplingReturnsTheStart) {
  auto full = make_diffusion(1000);
  auto base = Schedule::make(BetaSchedule::linear, 1000);
  auto g = gen(40);
  auto x0 = kMean + kStd * at::randn({1000, 2}, g, at::TensorOptions().dtype(at::kDouble));
  for (int64_t steps : {1000, 100, 20}) {
    GaussianDiffusion d(base.respace(space_timesteps(1000, "ddim" + std::to_string(steps))), MeanType::eps,
                        VarType::fixed_large);
    auto den = exact_gaussian(full, 2);
    for (int refine : {0, 4}) {
      auto xT = ddim_invert(d, den, x0, {}, refine);
      auto back = ddim_sample(d, den, xT, 0.0, g);
      const double err = max_abs_diff(back, x0), mean_err = (back - x0).abs().mean().item<double>();
      std::printf("DDIM inversion, %4lld steps, refine %d: |x0 - decode(encode(x0))| mean %.2e max %.2e\n",
                  static_cast<long long>(steps), refine, mean_err, err);
      // The latent is N(0, I) where DDIM itself is exact (at 20 steps it must undo DDIM's own shrinkage).
      if (steps == 1000) {
        EXPECT_NEAR(xT.std().item<double>(), 1.0, 0.05);
      }
      if (refine > 0) {
        EXPECT_LT(err, steps == 20 ? 1e-3 : 1e-5) << steps;
      } else if (steps == 1000) {
        EXPECT_LT(mean_err, 2e-3);
        EXPECT_LT(err, 1e-2);
      } else {
        EXPECT_LT(mean_err, steps == 100 ? 2e-2 : 1.5e-1) << steps;  // first order in the step size
      }
    }
  }
  // The mixture's denoiser is non-linear; at 1000 steps the round trip is still close.
  auto mix = ExactMixtureDenoiser(toy_mixture("8gaussians"), full.alphas_cumprod()).as_denoiser();
  auto pts = make_toy("8gaussians", 500, 3).x.to(at::kDouble);
  auto back = ddim_sample(full, mix, ddim_invert(full, mix, pts), 0.0, g);
  EXPECT_LT((back - pts).abs().mean().item<double>(), 2e-2);
  auto exact_back = ddim_sample(full, mix, ddim_invert(full, mix, pts, {}, 4), 0.0, g);
  std::printf("8 Gaussians, 1000 steps: mean error %.2e plain, %.2e refined\n",
              (back - pts).abs().mean().item<double>(), (exact_back - pts).abs().mean().item<double>());
  EXPECT_LT((exact_back - pts).abs().mean().item<double>(), 1e-3);
}

namespace {

/// Fraction of samples in each mode of the 8-Gaussian ring (nearest centre) and the fraction within 0.5 of one.
std::pair<std::vector<double>, double> mode_stats(const at::Tensor& x) {
  auto g = toy_mixture("8gaussians");
  auto centres = at::empty({8, 2}, at::TensorOptions().dtype(at::kDouble));
  for (int k = 0; k < 8; ++k) centres[k] = at::tensor(g.means[k], at::TensorOptions().dtype(at::kDouble));
  auto dist = at::cdist(x.to(at::kDouble), centres);
  auto [dmin, arg] = dist.min(1);
  std::vector<double> frac(8);
  for (int k = 0; k < 8; ++k) frac[k] = (arg == k).to(at::kDouble).mean().item<double>();
  return {frac, (dmin < 0.5).to(at::kDouble).mean().item<double>()};
}

}  // namespace

TEST(Samplers, MixtureSamplesFallOnTheModesInProportion) {
  auto full = make_diffusion(1000);
  auto mix = ExactMixtureDenoiser(toy_mixture("8gaussians"), full.alphas_cumprod()).as_denoiser();
  auto base = Schedule::make(BetaSchedule::linear, 1000);
  GaussianDiffusion d100(base.respace(space_timesteps(1000, "ddim100")), MeanType::eps, VarType::fixed_large);
  auto g = gen(50);
  for (int which = 0; which < 2; ++which) {
    auto x = which == 0 ? ddim_sample(d100, mix, at::randn({8000, 2}, g), 0.0, g)
                        : ddpm_sample(full, mix, at::randn({8000, 2}, g), g);
    auto [frac, near] = mode_stats(x);
    for (int k = 0; k < 8; ++k) EXPECT_NEAR(frac[k], 0.125, 0.015) << (which ? "ddpm" : "ddim") << " mode " << k;
    EXPECT_GT(near, 0.99) << (which ? "ddpm" : "ddim");
  }
}

TEST(Samplers, GuidanceWithClassLabelsLandsOnTheRequestedMode) {
  auto full = make_diffusion(1000);
  ExactMixtureDenoiser exact(toy_mixture("8gaussians"), full.alphas_cumprod());
  auto base = Schedule::make(BetaSchedule::linear, 1000);
  GaussianDiffusion d(base.respace(space_timesteps(1000, "ddim50")), MeanType::eps, VarType::fixed_large);
  auto g = gen(60);
  for (double w : {0.0, 1.0, 3.0}) {
    auto guided = classifier_free_guidance(exact.as_denoiser(), w, exact.null_label(), false);
    for (int64_t k : {0, 3, 6}) {
      SampleOptions o;
      o.y = at::full({2000}, k, at::TensorOptions().dtype(at::kLong));
      auto x = ddim_sample(d, guided, at::randn({2000, 2}, g), 0.0, g, o);
      auto [frac, near] = mode_stats(x);
      EXPECT_GT(frac[k], 0.99) << "w " << w << " class " << k;
    }
  }
  // w = 0 is the conditional model itself; the guided output is (1+w) ε_c - w ε_u exactly.
  auto x = at::randn({16, 2}, g);
  auto t = full_t(16, 500);
  auto y = at::full({16}, 2, at::TensorOptions().dtype(at::kLong));
  auto g2 = classifier_free_guidance(exact.as_denoiser(), 2.0, 8, false)(x, t, y);
  auto expect = 3.0 * exact(x, t, y) - 2.0 * exact(x, t, at::full({16}, 8, at::TensorOptions().dtype(at::kLong)));
  EXPECT_LT(max_abs_diff(g2, expect), 1e-6);
  EXPECT_THROW(classifier_free_guidance(exact.as_denoiser(), 1.0, 8, false)(x, t, at::Tensor()), InvalidArgument);
}

TEST(Samplers, ReportProgressAndRejectBadInput) {
  auto d = make_diffusion(50);
  auto den = exact_gaussian(d);
  auto g = gen(70);
  int64_t calls = 0, last = 0;
  SampleOptions o;
  o.progress = [&](int64_t done, int64_t total) {
    ++calls;
    last = done;
    EXPECT_EQ(total, 50);
  };
  ddpm_sample(d, den, at::randn({4, 1}, g), g, o);
  EXPECT_EQ(calls, 50);
  EXPECT_EQ(last, 50);
  EXPECT_THROW(ddim_sample(d, den, at::randn({4, 1}, g), -0.5, g), InvalidArgument);
  // Same seed, same bytes.
  auto g1 = gen(5), g2 = gen(5);
  auto a = ddim_sample(d, den, at::randn({64, 1}, g1), 0.5, g1);
  auto b = ddim_sample(d, den, at::randn({64, 1}, g2), 0.5, g2);
  EXPECT_TRUE(a.equal(b));
}

namespace {

/// Energy distance (Székely) between two samples, in double: 2E|X-Y| - E|X-X'| - E|Y-Y'|.
double energy_distance(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kDouble), y = b.to(at::kDouble);
  return 2.0 * at::cdist(x, y).mean().item<double>() - at::cdist(x, x).mean().item<double>() -
         at::cdist(y, y).mean().item<double>();
}

/// Spread of the samples about their nearest ring centre (the components have std 0.1 per axis).
double within_mode_std(const at::Tensor& x) {
  auto g = toy_mixture("8gaussians");
  auto centres = at::empty({8, 2}, at::TensorOptions().dtype(at::kDouble));
  for (int k = 0; k < 8; ++k) centres[k] = at::tensor(g.means[k], at::TensorOptions().dtype(at::kDouble));
  auto xd = x.to(at::kDouble);
  auto arg = std::get<1>(at::cdist(xd, centres).min(1));
  return (xd - centres.index_select(0, arg)).pow(2).mean().sqrt().item<double>();
}

GaussianDiffusion respaced(int64_t steps, const std::string& spacing) {
  auto base = Schedule::make(BetaSchedule::linear, 1000);
  return GaussianDiffusion(base.respace(respaced_timesteps(1000, steps, spacing, alphas_cumprod(base.betas))),
                           MeanType::eps, VarType::fixed_large);
}

}  // namespace

TEST(Samplers, DpmSolverFirstOrderIsDdim) {
  auto full = make_diffusion(1000);
  auto mix = ExactMixtureDenoiser(toy_mixture("8gaussians"), full.alphas_cumprod()).as_denoiser();
  auto d = respaced(20, "ddim");
  auto g = gen(80);
  auto xT = at::randn({2000, 2}, g, at::TensorOptions().dtype(at::kDouble));
  auto a = dpm_solver_sample(d, mix, xT, 1), b = ddim_sample(d, mix, xT, 0.0, g);
  EXPECT_LT(max_abs_diff(a, b), 1e-9);
  EXPECT_THROW(dpm_solver_sample(d, mix, xT, 3), InvalidArgument);
}

TEST(Samplers, DpmSolverMatchesTheGaussianMomentsAndBeatsDdimAtFewSteps) {
  // On the paper's log-SNR grid the second-order solver's error in the std is a small fraction of DDIM's. (On grids
  // whose last step jumps from t ≈ T/N to t = 0 the 2M extrapolation overshoots at 10–20 steps: the CLI therefore
  // uses the log-SNR grid for DPM-Solver++ unless told otherwise.)
  auto full = make_diffusion(1000);
  auto den = exact_gaussian(full);
  auto g = gen(81);
  auto xT = at::randn({20000, 1}, g);
  for (int64_t steps : {10, 20, 40, 1000}) {
    auto d = respaced(steps, "logsnr");
    auto [m2, s2] = moments(dpm_solver_sample(d, den, xT, 2));
    auto [m1, s1] = moments(ddim_sample(d, den, xT, 0.0, g));
    std::printf("N(0.1, 0.4²), %4lld log-SNR steps: DPM-Solver++(2M) mean %.4f std %.4f; DDIM mean %.4f std %.4f\n",
                static_cast<long long>(steps), m2, s2, m1, s1);
    if (steps <= 40) {
      EXPECT_LT(std::fabs(s2 - kStd), 0.2 * std::fabs(s1 - kStd)) << steps;
    }
    EXPECT_NEAR(m2, kMean, 0.01) << steps;
    EXPECT_NEAR(s2 / kStd, 1.0, steps == 10 ? 0.05 : 0.02) << steps;
  }
}

TEST(Samplers, DpmSolverAtTwentyStepsIsCloserToTheMixtureThanDdim) {
  auto full = make_diffusion(1000);
  auto mix = ExactMixtureDenoiser(toy_mixture("8gaussians"), full.alphas_cumprod()).as_denoiser();
  auto g = gen(82);
  auto xT = at::randn({4000, 2}, g, at::TensorOptions().dtype(at::kDouble));
  auto truth = sample_mixture(toy_mixture("8gaussians"), 4000, g).x;
  // What two independent exact samples of this size score: the distance's own noise floor.
  const double floor = energy_distance(sample_mixture(toy_mixture("8gaussians"), 4000, g).x, truth);
  auto d = respaced(20, "logsnr");
  auto dpm = dpm_solver_sample(d, mix, xT, 2), ddim = ddim_sample(d, mix, xT, 0.0, g);
  // Both solve the same probability-flow ODE from the same x_T; its solution, to ~1e-3, is DDIM at 1000 steps.
  auto ode = ddim_sample(full, mix, xT, 0.0, g);
  const double e_dpm = energy_distance(dpm, truth), e_ddim = energy_distance(ddim, truth);
  const double w_dpm = within_mode_std(dpm), w_ddim = within_mode_std(ddim), w_ode = within_mode_std(ode);
  const double o_dpm = (dpm - ode).norm(2, 1).mean().item<double>(), o_ddim = (ddim - ode).norm(2, 1).mean().item<double>();
  std::printf("8 Gaussians, 20 log-SNR steps, DPM-Solver++(2M) vs DDIM: within-mode std %.4f vs %.4f (exact 0.1, ODE "
              "%.4f); mean distance to the ODE solution %.4f vs %.4f; energy distance to exact samples %.4f vs %.4f "
              "(two exact samples: %.4f)\n",
              w_dpm, w_ddim, w_ode, o_dpm, o_ddim, e_dpm, e_ddim, floor);
  EXPECT_LT(std::fabs(w_dpm - 0.1), 0.4 * std::fabs(w_ddim - 0.1));
  EXPECT_LT(o_dpm, 0.4 * o_ddim);
  EXPECT_LT(e_dpm, e_ddim);
  auto [frac, near] = mode_stats(dpm);
  for (int k = 0; k < 8; ++k) EXPECT_NEAR(frac[k], 0.125, 0.02) << "mode " << k;
  EXPECT_GT(near, 0.99);
}

TEST(Samplers, AnnealedLangevinMatchesTheGaussianAndTheMixture) {
  auto full = make_diffusion(1000);
  auto g = gen(83);
  auto d = respaced(100, "logsnr");
  auto xT = at::randn({20000, 1}, g);
  // More steps per level: closer to the data (Langevin's bias is first order in the step size, and the chain lags
  // behind the falling noise level less).
  double last_err = 1e9;
  for (int64_t k : {2, 20}) {
    LangevinOptions lo{k, 0.3, true};
    auto [m, s] = moments(langevin_sample(d, exact_gaussian(full), xT, g, lo));
    std::printf("Langevin, 100 log-SNR levels × %lld steps, δ %.1f: mean %.4f std %.4f\n", static_cast<long long>(k),
                lo.step_scale, m, s);
    EXPECT_LT(std::fabs(s - kStd), last_err);
    last_err = std::fabs(s - kStd);
    if (k == 20) {
      EXPECT_NEAR(m, kMean, 0.01);
      EXPECT_NEAR(s / kStd, 1.0, 0.025);
    }
  }
  auto mix = ExactMixtureDenoiser(toy_mixture("8gaussians"), full.alphas_cumprod()).as_denoiser();
  auto xm = langevin_sample(d, mix, at::randn({8000, 2}, g), g, LangevinOptions{20, 0.3, true});
  auto [frac, near] = mode_stats(xm);
  std::printf("Langevin on 8 Gaussians: within-mode std %.4f (exact 0.1), near a mode %.4f\n", within_mode_std(xm), near);
  for (int k = 0; k < 8; ++k) EXPECT_NEAR(frac[k], 0.125, 0.015) << "mode " << k;
  EXPECT_GT(near, 0.99);
  EXPECT_NEAR(within_mode_std(xm), 0.1, 0.01);
  EXPECT_THROW(langevin_sample(d, mix, at::randn({4, 2}, g), g, LangevinOptions{0, 0.1, true}), InvalidArgument);
}

TEST(Samplers, SamplingFromAnIntermediateStepDrawsTheExactPosterior) {
  // Shared-latent samples (DDPM Fig. 7): from a fixed x_t, DDPM over the steps up to t draws p(x0 | x_t), which for
  // Gaussian data is N(m + √a s²(x_t - √a m)/v, s²(1-a)/v), a = ᾱ_t, v = a s² + 1 - a.
  auto full = make_diffusion(1000);
  auto base = Schedule::make(BetaSchedule::linear, 1000);
  auto all = space_timesteps(1000, "ddim1000");
  // (β̃ under-states the true reverse variance and β over-states it: the two fixed choices bracket the answer.)
  for (auto [t, vt] : {std::pair{100, VarType::fixed_small}, std::pair{100, VarType::fixed_large},
                       std::pair{500, VarType::fixed_small}}) {
    auto kept = timesteps_up_to(all, t);
    ASSERT_EQ(kept.back(), t);
    GaussianDiffusion d(base.respace(kept), MeanType::eps, vt);
    const double a = full.alphas_cumprod()[t], v = a * kStd * kStd + 1 - a, c = 0.7;
    auto g = gen(90 + t);
    auto x = ddpm_sample(d, exact_gaussian(full), at::full({20000, 1}, c), g);
    auto [m, s] = moments(x);
    const double want_m = kMean + std::sqrt(a) * kStd * kStd * (c - std::sqrt(a) * kMean) / v;
    const double want_s = kStd * std::sqrt((1 - a) / v);
    std::printf("from x_%lld = %.1f (%s): mean %.4f std %.4f (exact %.4f, %.4f)\n", static_cast<long long>(t), c,
                to_string(vt).c_str(), m, s, want_m, want_s);
    EXPECT_NEAR(m, want_m, 3 * want_s / std::sqrt(20000.0) + 2e-3) << t;
    EXPECT_NEAR(s / want_s, 1.0, 0.04) << t;
  }
  EXPECT_EQ(timesteps_up_to({0, 10, 20, 30}, 25), (std::vector<int64_t>{0, 10, 20, 25}));
  EXPECT_EQ(timesteps_up_to({0, 10, 20, 30}, 20), (std::vector<int64_t>{0, 10, 20}));
  EXPECT_THROW(timesteps_up_to({0, 10}, -1), InvalidArgument);
}

TEST(Samplers, StepObserverAndSharedNoise) {
  auto d = make_diffusion(50);
  auto den = exact_gaussian(d, 3);
  auto g = gen(91);
  SampleOptions o;
  std::vector<int64_t> seen;
  at::Tensor last;
  o.on_step = [&](int64_t i, const at::Tensor& x, const at::Tensor& x0) {
    seen.push_back(i);
    last = x;
    EXPECT_EQ(x0.sizes(), x.sizes());
  };
  o.shared_noise = true;
  auto start = at::randn({1, 3}, g).expand({4, 3}).contiguous();
  auto x = ddpm_sample(d, den, start, g, o);
  ASSERT_EQ(seen.size(), 50u);
  EXPECT_EQ(seen.front(), 49);
  EXPECT_EQ(seen.back(), 0);
  EXPECT_TRUE(last.equal(x));
  for (int64_t k = 1; k < 4; ++k) EXPECT_TRUE(x[k].equal(x[0]));  // one start, one noise: one sample
  o.shared_noise = false;
  auto y = ddpm_sample(d, den, start, g, o);
  EXPECT_FALSE(y[1].equal(y[0]));
}

TEST(Samplers, SlerpKeepsTheNormOfGaussianLatents) {
  auto g = gen(92);
  auto a = at::randn({3, 1000}, g, at::TensorOptions().dtype(at::kDouble));
  auto b = at::randn({3, 1000}, g, at::TensorOptions().dtype(at::kDouble));
  b = b / b.norm(2, 1, true) * a.norm(2, 1, true);  // equal norms
  EXPECT_LT(max_abs_diff(slerp(a, b, 0.0), a), 1e-12);
  EXPECT_LT(max_abs_diff(slerp(a, b, 1.0), b), 1e-12);
  auto theta = at::acos((a * b).sum(1) / (a.norm(2, 1) * b.norm(2, 1)));
  for (double l : {0.25, 0.5}) {
    auto m = slerp(a, b, l);
    EXPECT_LT(max_abs_diff(m.norm(2, 1), a.norm(2, 1)), 1e-9);  // on the sphere, unlike the linear midpoint
    auto ang = at::acos((a * m).sum(1) / (a.norm(2, 1) * m.norm(2, 1)));
    EXPECT_LT(max_abs_diff(ang, l * theta), 1e-9);
  }
  EXPECT_LT(max_abs_diff(slerp(a, a, 0.3), a), 1e-12);  // parallel: no division by zero
}

TEST(Samplers, RepaintFillsInTheExactConditionalOfAMixtureBetterWithResampling) {
  // 8 Gaussians with x1 = 1 known: the exact conditional of x2 is the 1-D mixture with weights
  // ∝ w_k N(1; μ_k1, σ²) and components N(μ_k2, σ²): two modes at ±√2, half the mass each, sd σ = 0.1. Measured: the
  // spread within the modes (plain replacement leaves it far too wide), the upper mode's share, and the
  // Wasserstein-1 distance to exact draws (noisy: its exact-against-exact floor is printed).
  auto ring = toy_mixture("8gaussians");
  auto full = make_diffusion(1000);
  auto base = Schedule::make(BetaSchedule::linear, 1000);
  GaussianDiffusion d(base.respace(space_timesteps(1000, "ddim250")), MeanType::eps, VarType::fixed_large);
  auto model = ExactMixtureDenoiser(ring, full.alphas_cumprod()).as_denoiser();
  const int64_t n = 10000;
  const double x1 = 1.0, sd = ring.stds[0];
  std::vector<double> w;
  for (size_t k = 0; k < ring.means.size(); ++k)
    w.push_back(std::exp(-0.5 * std::pow((x1 - ring.means[k][0]) / sd, 2)));
  auto g = gen(70);
  auto exact_draws = [&](int64_t m) {
    auto comp = at::multinomial(at::tensor(w, at::kDouble), m, true, g);
    auto mu = at::empty({m}, at::kDouble);
    for (int64_t i = 0; i < m; ++i) mu[i] = ring.means[comp[i].item<int64_t>()][1];
    return std::get<0>((mu + sd * at::randn({m}, g).to(at::kDouble)).sort());
  };
  auto w1 = [](const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().mean().item<double>(); };
  double floor = 0;
  for (int i = 0; i < 4; ++i) floor += w1(exact_draws(n), exact_draws(n)) / 4;
  auto known = at::zeros({n, 2}, at::kDouble);
  known.select(1, 0).fill_(x1);
  auto mask = at::tensor({1.0, 0.0}, at::kDouble).view({1, 2});
  std::vector<double> dist, spread;
  std::printf("RePaint on 8 Gaussians, x1 = 1 known, 250 DDPM steps, %lld draws: W1 floor %.4f\n",
              static_cast<long long>(n), floor);
  for (int64_t r : {1, 5, 10}) {
    RepaintOptions ro;
    ro.jump = 10;
    ro.resample = r;
    auto x = repaint_sample(d, model, known, mask, at::randn({n, 2}, g).to(at::kDouble), g, ro);
    EXPECT_LT(max_abs_diff(x.select(1, 0), known.select(1, 0)), 1e-12);  // the known part is kept exactly
    dist.push_back(w1(std::get<0>(x.select(1, 1).sort()), exact_draws(n)));
    auto x2 = x.select(1, 1);
    spread.push_back((x2 - x2.sign() * std::sqrt(2.0)).std().item<double>());
    EXPECT_NEAR((x2 > 0).to(at::kDouble).mean().item<double>(), 0.5, 4 * std::sqrt(0.25 / n)) << "r " << r;
    auto up = x2.index_select(0, (x2 > 0).nonzero().squeeze(1));
    std::printf("  r = %2lld (j = 10): W1 %.4f; upper mode %.4f of the draws (exact 0.5), its mean %.4f sd %.4f "
                "(exact %.4f, %.4f)\n",
                static_cast<long long>(r), dist.back(), (x2 > 0).to(at::kDouble).mean().item<double>(),
                up.mean().item<double>(), up.std().item<double>(), ring.means[2][1] * 0 + std::sqrt(2.0), sd);
  }
  // Resampling is closer than plain replacement; r = 10 brings the spread within 25 % of σ (s.e. of a std ≈ 0.7 %).
  EXPECT_LT(spread[1], 0.6 * spread[0]);
  EXPECT_LT(spread[2], spread[1] * 1.02);
  EXPECT_NEAR(spread[2], sd, 0.25 * sd);
  RepaintOptions bad;
  bad.jump = 0;
  EXPECT_THROW(repaint_sample(d, model, known, mask, known, g, bad), InvalidArgument);
  EXPECT_THROW(repaint_sample(d, model, known.slice(0, 0, 5), mask, known, g), InvalidArgument);
}

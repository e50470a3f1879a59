// Classifier guidance against exact answers (SPEC §9): the exact noisy classifier of a Gaussian mixture, its
// gradient against finite differences, the identity ∇log p(x_t|y) = ∇log p(x_t) + ∇log p(y|x_t) (guidance at s = 1
// of the exact unconditional denoiser is the exact conditional one), DDIM and DPM-Solver++ samples that match the
// exact conditional denoiser's, DDPM Algorithm 1 converging to it, and larger scales sharpening.
#include <cmath>

#include "ddpm/data/points.h"
#include "ddpm/guidance.h"
#include "ddpm/models/exact.h"
#include "ddpm/sampler_registry.h"
#include "ddpm/serve/generation.h"
#include "ddpm/store/model.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {

at::Tensor labels(int64_t n, int64_t k) { return at::full({n}, k, at::TensorOptions().dtype(at::kLong)); }

/// The exact denoiser of the whole mixture, whatever labels it is given (an unconditional model).
Denoiser unconditional(const ExactMixtureDenoiser& exact) {
  auto d = exact.as_denoiser();
  return [d](const at::Tensor& x, const at::Tensor& t, const at::Tensor&) { return d(x, t, at::Tensor()); };
}

/// Mean distance of samples from centre k, the spread around it, and the share nearest to it.
struct ModeFit {
  double mean_err, spread, share;
};
ModeFit fit(const at::Tensor& x, const GaussianMixture& g, int64_t k) {
  auto xd = x.to(at::kDouble);
  auto centre = at::tensor(g.means[k], at::TensorOptions().dtype(at::kDouble));
  std::vector<double> c;
  for (const auto& m : g.means) c.insert(c.end(), m.begin(), m.end());
  auto centres = at::tensor(c, at::TensorOptions().dtype(at::kDouble)).view({-1, 2});
  auto nearest = std::get<1>(at::cdist(xd, centres).min(1));
  auto on = xd.index_select(0, (nearest == k).nonzero().squeeze(1));
  return {(on.mean(0) - centre).norm().item<double>(), (on - centre).pow(2).sum(1).mean().sqrt().item<double>() / std::sqrt(2.0),
          (nearest == k).to(at::kDouble).mean().item<double>()};
}

}  // namespace

TEST(Guidance, TheExactClassifiersGradientMatchesFiniteDifferences) {
  auto full = make_diffusion(1000);
  ExactNoisyClassifier c(toy_mixture("8gaussians"), full.alphas_cumprod());
  auto g = gen(1);
  auto x = at::randn({16, 2}, g).to(at::kDouble) * 1.5;
  auto t = at::randint(0, 1000, {16}, g);
  auto y = at::randint(0, 8, {16}, g);
  auto grad = classifier_gradient(c.as_classifier(), x, t, y);
  const double h = 1e-6;
  for (int64_t d = 0; d < 2; ++d) {
    auto e = at::zeros_like(x);
    e.select(1, d).fill_(h);
    auto lp = [&](const at::Tensor& z) { return at::log_softmax(c.logits(z, t), 1).gather(1, y.unsqueeze(1)).squeeze(1); };
    auto fd = (lp(x + e) - lp(x - e)) / (2 * h);
    EXPECT_LT(max_abs_diff(grad.select(1, d), fd), 1e-6) << "coordinate " << d;
  }
  // Responsibilities are a distribution over the components, and at t = 0 they pick the nearest mode.
  auto p = at::softmax(c.logits(x, t), 1);
  EXPECT_LT(max_abs_diff(p.sum(1), at::ones({16}, at::kDouble)), 1e-12);
  auto ring = toy_mixture("8gaussians");
  auto at_mode = at::tensor(ring.means[5], at::TensorOptions().dtype(at::kDouble)).view({1, 2});
  EXPECT_EQ(c.logits(at_mode, at::zeros({1}, at::kLong)).argmax(1).item<int64_t>(), 5);
  EXPECT_THROW(classifier_gradient(c.as_classifier(), x, t, labels(16, 8)), InvalidArgument);
}

TEST(Guidance, ScaleOneTurnsTheUnconditionalScoreIntoTheConditionalOne) {
  auto full = make_diffusion(1000);
  auto ring = toy_mixture("8gaussians");
  ExactMixtureDenoiser exact(ring, full.alphas_cumprod());
  ExactNoisyClassifier c(ring, full.alphas_cumprod());
  auto guided = classifier_guidance(unconditional(exact), c.as_classifier(), full.alphas_cumprod(), 1.0, MeanType::eps,
                                    false);
  auto g = gen(2);
  auto x = at::randn({64, 2}, g).to(at::kDouble) * 2;
  for (int64_t t : {0, 10, 200, 600, 999}) {
    auto tt = full_t(64, t);
    for (int64_t k : {0, 3, 7}) {
      auto want = exact.as_denoiser()(x, tt, labels(64, k));  // the exact denoiser of component k
      EXPECT_LT(max_abs_diff(guided(x, tt, labels(64, k)), want), 1e-9) << "t " << t << " class " << k;
    }
  }
  EXPECT_THROW(classifier_guidance(unconditional(exact), c.as_classifier(), full.alphas_cumprod(), 1.0, MeanType::x0, false),
               InvalidArgument);
}

TEST(Guidance, DeterministicSamplersLandExactlyWhereTheConditionalDenoiserDoes) {
  auto full = make_diffusion(1000);
  auto ring = toy_mixture("8gaussians");
  ExactMixtureDenoiser exact(ring, full.alphas_cumprod());
  ExactNoisyClassifier c(ring, full.alphas_cumprod());
  auto guided = classifier_guidance(unconditional(exact), c.as_classifier(), full.alphas_cumprod(), 1.0, MeanType::eps,
                                    false);
  DiffusionConfig cfg;
  for (const char* name : {"ddim", "dpm++"}) {
    SamplerSpec spec;
    spec.name = name;
    spec.steps = 50;
    auto g = gen(3);
    auto x_T = at::randn({2000, 2}, g).to(at::kDouble);
    SampleOptions o;
    o.y = labels(2000, 2);
    auto a = run_sampler(spec, spec.process(cfg), guided, x_T, gen(4), o);
    auto b = run_sampler(spec, spec.process(cfg), exact.as_denoiser(), x_T, gen(4), o);
    EXPECT_LT(max_abs_diff(a, b), 1e-8) << name;
    auto f = fit(a, ring, 2);
    EXPECT_GT(f.share, 0.995) << name;
    // Monte-Carlo error of the mean: spread/√N ≈ 0.1/45 ≈ 0.002.
    EXPECT_LT(f.mean_err, 0.01) << name;
    std::printf("%s s=1: share %.4f, mean error %.4f, spread %.4f (component std %.4f)\n", name, f.share, f.mean_err,
                f.spread, ring.stds[2]);
  }
}

TEST(Guidance, DdpmAlgorithmOneApproachesTheConditionalAsStepsGrowAndLargerScalesSharpen) {
  auto ring = toy_mixture("8gaussians");
  DiffusionConfig cfg;
  auto full = cfg.make();
  ExactMixtureDenoiser exact(ring, full.alphas_cumprod());
  ExactNoisyClassifier c(ring, full.alphas_cumprod());
  const int64_t n = 4000, k = 5;
  std::vector<double> err;
  for (int64_t steps : {50, 1000}) {
    SamplerSpec spec;
    spec.name = "ddpm";
    spec.steps = steps;
    SampleOptions o;
    o.y = labels(n, k);
    o.mean_guidance = classifier_mean_guidance(c.as_classifier(), 1.0);
    auto g = gen(5);
    auto x = run_sampler(spec, spec.process(cfg), unconditional(exact), at::randn({n, 2}, g).to(at::kDouble), g, o);
    auto f = fit(x, ring, k);
    std::printf("ddpm Algorithm 1, %lld steps: share %.4f, mean error %.4f, spread %.4f (exact %.4f)\n",
                static_cast<long long>(steps), f.share, f.mean_err, f.spread, ring.stds[k]);
    err.push_back(std::abs(f.spread - ring.stds[k]) + f.mean_err + (1 - f.share));
    if (steps == 1000) {
      EXPECT_GT(f.share, 0.99);
      EXPECT_LT(f.mean_err, 0.02);
      EXPECT_NEAR(f.spread, ring.stds[k], 0.2 * ring.stds[k]);
    }
  }
  EXPECT_LT(err[1], err[0]);
  // Larger scales sharpen the class — its samples move away from the other class — on two overlapping components,
  // where the exact classifier is not saturated: the mean log p(y | x0) of the samples rises with s. (On the well-
  // separated ring it saturates: there large s only pushes the samples outwards, the spread around the mode grows,
  // as this test prints.)
  GaussianMixture two;
  two.weights = {1.0, 1.0};
  two.means = {{-0.5, 0.0}, {0.5, 0.0}};
  two.stds = {0.5, 0.5};
  ExactMixtureDenoiser exact2(two, full.alphas_cumprod());
  ExactNoisyClassifier c2(two, full.alphas_cumprod());
  std::vector<double> confidence, se;
  for (double s : {0.0, 1.0, 4.0, 16.0}) {
    SamplerSpec spec;
    spec.name = "dpm++";
    spec.steps = 50;
    auto guided = classifier_guidance(unconditional(exact2), c2.as_classifier(), full.alphas_cumprod(), s, MeanType::eps, false);
    SampleOptions o;
    o.y = labels(n, 0);
    auto g = gen(6);
    auto x = run_sampler(spec, spec.process(cfg), guided, at::randn({n, 2}, g).to(at::kDouble), g, o);
    auto lp = at::log_softmax(c2.logits(x, at::zeros({n}, at::kLong)), 1).select(1, 0);
    confidence.push_back(lp.mean().item<double>());
    se.push_back(lp.std().item<double>() / std::sqrt(double(n)));
    auto ringed = classifier_guidance(unconditional(exact), c.as_classifier(), full.alphas_cumprod(), s, MeanType::eps, false);
    o.y = labels(n, k);
    auto xr = run_sampler(spec, spec.process(cfg), ringed, at::randn({n, 2}, g).to(at::kDouble), g, o);
    std::printf("s=%4.1f: two components E log p(y|x0) %.4f (Monte-Carlo s.e. %.4f); ring spread %.4f\n", s,
                confidence.back(), lp.std().item<double>() / std::sqrt(double(n)), fit(xr, ring, k).spread);
  }
  for (size_t i = 1; i < confidence.size(); ++i) EXPECT_GT(confidence[i], confidence[i - 1] + 4 * se[i - 1]) << i;
  // At s = 1 the samples are the class itself, where log p(0 | x) = -softplus(4 x1) and x1 ~ N(-0.5, 0.5²):
  // E by quadrature, within 4 Monte-Carlo standard errors.
  double e = 0, h = 1e-4;
  for (double u = -8; u < 8; u += h) {
    const double x1 = -0.5 + 0.5 * u;
    e += -std::log1p(std::exp(4 * x1)) * std::exp(-0.5 * u * u) / std::sqrt(2 * M_PI) * h;
  }
  std::printf("s=1 exact E log p(y|x0) = %.4f\n", e);
  EXPECT_NEAR(confidence[1], e, 4 * se[1]);
}

TEST(Guidance, GenerationGuidesAMixtureModelWithItsExactClassifier) {
  // What `ddpm sample -m gmm:8gaussians --classifier exact --class 6` runs: at s = 1, DDIM lands where the exact
  // denoiser of component 6 takes the same x_T.
  auto m = open_model("gmm:8gaussians");
  auto c = open_noisy_classifier("exact", m);
  EXPECT_EQ(c.num_classes, 8);
  GenerationRequest r;
  r.sampler.name = "ddim";
  r.sampler.steps = 40;
  r.klass = 6;
  r.num = 500;
  r.seed = 11;
  r.classifier = c.classifier;
  r.classifier_classes = c.num_classes;
  r.classifier_spec = "exact";
  auto x = generate(m, r);
  GenerationRequest plain = r;
  plain.classifier = nullptr;  // the model's own class-conditional denoiser
  EXPECT_LT(max_abs_diff(x, generate(m, plain)), 1e-4);
  EXPECT_NE(sample_command("gmm:8gaussians", r, 1).find("--classifier exact --classifier-scale 1"), std::string::npos);
  // DDPM takes Algorithm 1 and lands on the mode too.
  r.sampler.name = "ddpm";
  r.sampler.steps = 200;
  auto f = fit(generate(m, r), toy_mixture("8gaussians"), 6);
  EXPECT_GT(f.share, 0.99);
  EXPECT_LT(f.mean_err, 0.03);
  // Mistakes name their field.
  r.klass = 8;
  EXPECT_THROW(generate(m, r), InvalidArgument);
  r.klass.reset();
  try {
    generate(m, r);
    ADD_FAILURE() << "no class accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.field(), "class");
  }
  EXPECT_THROW(open_noisy_classifier("exact", Model{}), InvalidArgument);  // a network: no closed form
  EXPECT_THROW(open_noisy_classifier("nope.safetensors", m), InvalidArgument);
}

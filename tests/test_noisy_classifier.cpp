// Noise-aware classifiers (models/noisy_classifier, train/noisy_classifier, store/classifier): a trained MLP on the
// 8-Gaussian ring against the exact noisy classifier of SPEC §9 — scored on the very same x_t, band by band — and
// guiding the exact unconditional denoiser nearly as well as the exact classifier does; the file round trip and the
// refusals of open_noisy_classifier; the U-Net encoder learning a two-class image set.
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "ddpm/data/points.h"
#include "ddpm/errors.h"
#include "ddpm/guidance.h"
#include "ddpm/io/safetensors.h"
#include "ddpm/models/exact.h"
#include "ddpm/models/noisy_classifier.h"
#include "ddpm/sampler_registry.h"
#include "ddpm/samplers.h"
#include "ddpm/store/classifier.h"
#include "ddpm/store/model.h"
#include "ddpm/train/noisy_classifier.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("ddpm_noisy_" + std::to_string(::getpid()) + "_" + name)).string();
}

// One trained ring classifier for every test here (5 s on one core).
struct Ring {
  GaussianMixture mixture = toy_mixture("8gaussians");
  DiffusionConfig diffusion;
  std::shared_ptr<NoisyClassifierNet> net;
  Ring() {
    torch::manual_seed(0);
    NoisyClassifierOptions o;
    o.arch = "mlp";
    o.num_classes = 8;
    net = make_noisy_classifier(o);
    auto train = make_toy("8gaussians", 20000, 0);
    NoisyClassifierTrainOptions t;
    t.steps = 1500;
    t.batch = 256;
    train_noisy_classifier(*net, diffusion, train.x, train.labels, t);
  }
};
const Ring& ring() {
  static Ring r;
  return r;
}

}  // namespace

TEST(NoisyClassifier, TrainedOnTheRingItNearsTheExactClassifiersAccuracyInEveryBand) {
  const auto& r = ring();
  auto test = make_toy("8gaussians", 4000, 7);
  ExactNoisyClassifier exact(r.mixture, r.diffusion.alphas_cumprod());
  const auto mine = noisy_accuracy_by_band(as_noisy_classifier(r.net), r.diffusion, test.x, test.labels, 5, 2, 3);
  const auto best = noisy_accuracy_by_band(exact.as_classifier(), r.diffusion, test.x, test.labels, 5, 2, 3);
  ASSERT_EQ(mine.size(), 5u);
  for (size_t b = 0; b < mine.size(); ++b) {
    EXPECT_EQ(mine[b].count, 8000);
    EXPECT_EQ(mine[b].t_begin, best[b].t_begin);
    // Both are scored on the same x_t, so the Monte-Carlo error of the difference is that of the items on which
    // they disagree: ≤ √(0.15/8000) ≈ 0.004 (measured disagreement under 15 %). 0.03 leaves the network's own
    // shortfall room; the exact classifier is the Bayes optimum, so `mine` cannot beat it beyond that error.
    EXPECT_GT(mine[b].accuracy, best[b].accuracy - 0.03) << "band " << b;
    EXPECT_LT(mine[b].accuracy, best[b].accuracy + 0.015) << "band " << b;
  }
  // Information about the class fades with noise: the exact accuracy falls towards chance (1/8).
  EXPECT_GT(best[0].accuracy, 0.85);
  EXPECT_LT(best[4].accuracy, 0.2);
  EXPECT_GT(best[4].accuracy, 0.1);
}

TEST(NoisyClassifier, GuidingTheExactMixtureWithTheTrainedClassifierReachesTheClass) {
  const auto& r = ring();
  ExactMixtureDenoiser exact(r.mixture, r.diffusion.alphas_cumprod());
  auto d = exact.as_denoiser();
  Denoiser uncond = [d](const at::Tensor& x, const at::Tensor& t, const at::Tensor&) { return d(x, t, at::Tensor()); };
  const int64_t n = 2000, k = 3;
  auto guided = classifier_guidance(uncond, as_noisy_classifier(r.net), r.diffusion.alphas_cumprod(), 1.0,
                                    MeanType::eps, false);
  auto process = r.diffusion.respaced(50, "ddim");
  auto xT = at::randn({n, 2}, gen(11), at::TensorOptions().dtype(at::kDouble));
  SampleOptions so;
  so.y = at::full({n}, k, at::TensorOptions().dtype(at::kLong));
  auto x = ddim_sample(process, guided, xT, 0.0, gen(12), so);
  // Share of samples nearest to centre k: with the exact classifier this is ≈ 0.99 (test_guidance); a trained one is
  // slightly off at large t, so allow 0.9. Unguided, it would be 1/8.
  std::vector<double> c;
  for (const auto& m : r.mixture.means) c.insert(c.end(), m.begin(), m.end());
  auto centres = at::tensor(c, at::TensorOptions().dtype(at::kDouble)).view({-1, 2});
  auto nearest = std::get<1>(at::cdist(x.to(at::kDouble), centres).min(1));
  const double share = (nearest == k).to(at::kDouble).mean().item<double>();
  EXPECT_GT(share, 0.9);
}

TEST(NoisyClassifier, ItsFileRoundTripsAndOpensOnlyForAModelOfTheSameProcess) {
  const auto& r = ring();
  const auto path = temp_file("ring.safetensors");
  save_noisy_classifier(path, *r.net, r.diffusion, {{"command", "test"}});
  auto back = load_noisy_classifier(path);
  EXPECT_EQ(back.diffusion, r.diffusion);
  EXPECT_EQ(back.meta.value("command", std::string()), "test");
  auto x = at::randn({64, 2}, gen(1));
  auto t = at::randint(0, 1000, {64}, gen(2), at::TensorOptions().dtype(at::kLong));
  at::NoGradGuard g;
  r.net->eval();
  EXPECT_EQ(max_abs_diff(back.net->forward(x, t), r.net->forward(x, t)), 0.0);

  auto opened = open_noisy_classifier(path, open_model("gmm:8gaussians"));
  EXPECT_EQ(opened.num_classes, 8);
  EXPECT_EQ(max_abs_diff(opened.classifier(x, t), r.net->forward(x, t)), 0.0);
  OpenOptions cosine;
  cosine.diffusion.schedule = BetaSchedule::cosine;
  EXPECT_THROW(open_noisy_classifier(path, open_model("gmm:8gaussians", cosine)), ConfigMismatch);
  EXPECT_THROW(open_noisy_classifier(path, open_model("gaussian:mean=0,std=1,dim=3")), ConfigMismatch);
  EXPECT_THROW(open_noisy_classifier(temp_file("absent.safetensors"), open_model("gmm:8gaussians")), InvalidArgument);
  // A file that is not a noisy classifier: the evaluation classifier's kind of metadata.
  const auto other = temp_file("other.safetensors");
  SafeTensors st;
  st.tensors.push_back({"w", at::zeros({2})});
  st.metadata["network"] = R"({"type": "classifier"})";
  save_safetensors(other, st);
  EXPECT_THROW(load_noisy_classifier(other), FormatError);
  std::filesystem::remove(path);
  std::filesystem::remove(other);
}

TEST(NoisyClassifier, TheUNetEncoderLearnsTwoImageClassesAndGivesAGradient) {
  // Class 0: images at −0.5, class 1: at +0.5 (8×8, one channel, pixel noise 0.2). At small t the classes are far
  // apart (the mean of 64 pixels separates them by 1 with noise 0.2/8), at t near T they are not.
  const int64_t N = 512;
  auto y = at::arange(N, at::TensorOptions().dtype(at::kLong)).remainder(2);
  auto x = (y.to(at::kFloat) - 0.5).view({N, 1, 1, 1}).expand({N, 1, 8, 8}) + 0.2 * at::randn({N, 1, 8, 8}, gen(4));
  NoisyClassifierOptions o;
  o.in_channels = 1;
  o.image_size = 8;
  o.num_classes = 2;
  o.base_channels = 16;
  o.channel_mult = {1, 2};
  o.attention_resolutions = {4};
  torch::manual_seed(0);
  auto net = make_noisy_classifier(o);
  DiffusionConfig diffusion;
  NoisyClassifierTrainOptions t;
  t.steps = 150;
  t.batch = 64;
  t.lr = 2e-3;
  train_noisy_classifier(*net, diffusion, x, y, t);
  auto bands = noisy_accuracy_by_band(as_noisy_classifier(net), diffusion, x, y, 10, 1, 5);
  // In band 0 (t < 100, SNR > 1.7) the exact two-Gaussian error is far below 1 %.
  EXPECT_GT(bands[0].accuracy, 0.97);
  auto xt = at::randn({4, 1, 8, 8}, gen(6));
  auto g = classifier_gradient(as_noisy_classifier(net), xt, full_t(4, 50), at::ones({4}, at::kLong));
  EXPECT_EQ(g.sizes(), xt.sizes());
  EXPECT_TRUE(at::isfinite(g).all().item<bool>());
  // Moving x along +1 raises log p(class 1): the gradient points that way on average.
  EXPECT_GT(g.mean().item<double>(), 0.0);

  NoisyClassifierOptions bad = o;
  bad.groups = 5;
  EXPECT_THROW(make_noisy_classifier(bad), InvalidArgument);
  bad = o;
  bad.arch = "resnet";
  EXPECT_THROW(make_noisy_classifier(bad), InvalidArgument);
  EXPECT_THROW(train_noisy_classifier(*net, diffusion, x.slice(2, 0, 4), y, t), InvalidArgument);
  EXPECT_THROW(train_noisy_classifier(*net, diffusion, x, y + 5, t), InvalidArgument);
}

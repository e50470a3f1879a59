// The evaluation classifier: it learns a separable task, survives a save/load round trip bit for bit, and feeds
// FID and IS as they expect.
#include <cmath>
#include <filesystem>

#include "ddpm/errors.h"
#include "ddpm/eval/metrics.h"
#include "ddpm/models/classifier.h"
#include "ddpm/store/classifier.h"
#include "ddpm/train/classifier.h"
#include "support.h"

#include <torch/utils.h>

using namespace ddpm;
using namespace ddpm::test;

namespace {

/// Class k: a bright horizontal bar at rows 2+4k..3+4k of a dark 16×16 image, plus noise.
std::pair<at::Tensor, at::Tensor> bars(int64_t n, uint64_t seed) {
  auto g = gen(seed);
  auto y = at::arange(n, at::TensorOptions().dtype(at::kLong)) % 3;
  auto x = at::full({n, 1, 16, 16}, -0.8) + 0.3 * at::randn({n, 1, 16, 16}, g);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = 2 + 4 * y[i].item<int64_t>();
    x[i].slice(1, r, r + 2).add_(1.5);
  }
  return {x.clamp(-1, 1), y};
}

}  // namespace

TEST(Classifier, LearnsASeparableTaskAndRoundTrips) {
  ClassifierOptions o;
  o.image_size = 16;
  o.num_classes = 3;
  o.width = 8;
  o.feature_dim = 32;
  torch::manual_seed(0);  // the initial weights
  Classifier net(o);
  auto [x, y] = bars(600, 1);
  auto [tx, ty] = bars(300, 2);
  ClassifierTrainOptions t;
  t.epochs = 3;
  t.batch = 50;
  t.random_flip = false;
  std::vector<double> accs;
  t.on_epoch = [&](int64_t, double acc) { accs.push_back(acc); };
  train_classifier(net, x, y, t, tx, ty);
  ASSERT_EQ(accs.size(), 3u);
  EXPECT_GE(accs.back(), 0.98);
  EXPECT_DOUBLE_EQ(classifier_accuracy(net, tx, ty), accs.back());
  auto path = (std::filesystem::temp_directory_path() / ("ddpm_cls_" + std::to_string(::getpid()) + ".safetensors")).string();
  save_classifier(path, net, {{"test_accuracy", accs.back()}});
  nlohmann::json meta;
  auto back = load_classifier(path, &meta);
  EXPECT_TRUE(classifier_apply(*back, tx, false).equal(classifier_apply(net, tx, false)));
  EXPECT_DOUBLE_EQ(meta["test_accuracy"].get<double>(), accs.back());
  auto f = classifier_apply(net, tx, true);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{300, 32}));
  // Right on balanced classes: the IS lies above 1 and at most the class count; the test set against itself: FID 0.
  auto probs = at::softmax(classifier_apply(net, tx, false).to(at::kDouble), 1);
  EXPECT_GT(inception_score(probs).first, 1.0);
  EXPECT_LE(inception_score(probs).first, 3.0 + 1e-9);
  // FID of a set against itself is 0 up to rounding: eigenvalues near 0 of a rank-deficient covariance (ReLU features)
  // carry errors of ~eps·λmax and enter through their square roots, ~√(eps·λmax) each, so bound it by D·√(eps·tr Σ).
  {
    auto st = feature_stats(f);
    const double tr = st.cov.trace().item<double>();
    EXPECT_LT(frechet_distance(st, st), 32 * std::sqrt(2.3e-16 * tr)) << "trace " << tr;
    EXPECT_GT(frechet_distance(st, feature_stats(f * 1.1)), 1e-3 * tr);  // and it sees a change of scale
  }
  EXPECT_THROW(net.forward(at::zeros({2, 3, 16, 16})), InvalidArgument);
  EXPECT_THROW(load_classifier(std::string(DDPM_TEST_DATA) + "/ts_conv_x.npy"), FormatError);
  std::filesystem::remove(path);
}

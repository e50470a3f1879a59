// ddpm classifier train | eval: the small classifier behind FID and IS for 28/32-pixel data sets, and (--noisy) the
// noise-aware classifiers of classifier guidance.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>

#include "commands.h"
#include "common.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/models/classifier.h"
#include "ddpm/store/classifier.h"
#include "ddpm/train/classifier.h"
#include "ddpm/train/noisy_classifier.h"
#include "ddpm/train/run.h"

namespace ddpm::cli {
namespace {

struct ImagesWithLabels {
  at::Tensor x, y;
  int64_t num_classes = 0;
};

ImagesWithLabels load_labelled(const std::string& spec, int64_t limit = 0) {
  auto s = load_image_dataset(spec);
  if (!s.labels.defined()) throw InvalidArgument("'" + spec + "' has no labels; a classifier needs them");
  const int64_t n = limit > 0 ? std::min(limit, s.size()) : s.size();
  return {to_model_range(s.images.slice(0, 0, n), padded_side(s.images.size(2))), s.labels.slice(0, 0, n),
          s.num_classes > 0 ? s.num_classes : s.labels.max().item<int64_t>() + 1};
}

struct TrainArgs {
  std::string data = "fashion-mnist", test = "fashion-mnist:test", out;
  std::optional<double> lr;
  ClassifierOptions net;
  ClassifierTrainOptions train;
  // --noisy
  bool noisy = false;
  std::string like, channel_mult = "1,2,2";
  DiffusionFlags diffusion;
  NoisyClassifierOptions noisy_net;
  NoisyClassifierTrainOptions noisy_train;
  int64_t bands = 5, data_size = 20000;
};

// Labelled items for a noisy classifier: images, or points (toy:NAME / FILE.npy with labels) of `size` drawn with
// `seed`.
TrainingData labelled_items(const std::string& spec, int64_t size, uint64_t seed) {
  DataSource src;
  src.spec = spec;
  src.size = size;
  src.seed = seed;
  auto d = load_training_data(src);
  if (!d.labels.defined() || d.num_classes < 2)
    throw InvalidArgument("'" + spec + "' has no class labels; a classifier needs them (toy:8gaussians, toy:moons, "
                          "fashion-mnist, ...)", "data");
  return d;
}

void print_bands(const std::vector<BandAccuracy>& bands, const std::string& what) {
  std::printf("accuracy on %s by timestep band:\n", what.c_str());
  for (const auto& b : bands)
    std::printf("  t %4lld-%-4lld  %.4f  (%lld items)\n", static_cast<long long>(b.t_begin),
                static_cast<long long>(b.t_end - 1), b.accuracy, static_cast<long long>(b.count));
}

nlohmann::json bands_json(const std::vector<BandAccuracy>& bands) {
  auto j = nlohmann::json::array();
  for (const auto& b : bands)
    j.push_back({{"t_begin", b.t_begin}, {"t_end", b.t_end}, {"accuracy", b.accuracy}, {"count", b.count}});
  return j;
}

double mean_accuracy(const std::vector<BandAccuracy>& bands) {
  double s = 0;
  for (const auto& b : bands) s += b.accuracy;
  return bands.empty() ? std::nan("") : s / static_cast<double>(bands.size());
}

void run_train_noisy(TrainArgs& a) {
  check_writable(a.out);
  DiffusionConfig diffusion;
  if (!a.like.empty()) {
    auto m = open_cli_model(a.like, a.diffusion);
    diffusion = m.diffusion;
  } else {
    diffusion = a.diffusion.overrides().over(DiffusionConfig());
  }
  auto tr = labelled_items(a.data, a.data_size, 0);
  const bool points = !tr.images;
  // Points: a held-out draw of the same distribution (seed 1) unless --test names one.
  std::string test = a.test;
  if (points && test == "fashion-mnist:test") test = a.data.rfind("toy:", 0) == 0 ? a.data : "";
  TrainingData te;
  if (!test.empty()) te = labelled_items(test, std::min<int64_t>(a.data_size, 10000), 1);
  auto& o = a.noisy_net;
  o.num_classes = tr.num_classes;
  if (points) {
    o.arch = "mlp";
    o.dim = tr.x.size(1);
  } else {
    o.arch = "unet";
    o.in_channels = tr.x.size(1);
    o.image_size = tr.x.size(2);
    o.base_channels = a.net.width;
    o.channel_mult = parse_int_list(a.channel_mult, "--channel-mult");
    o.dropout = a.net.dropout;
  }
  torch::manual_seed(a.noisy_train.seed);  // initialisation
  auto net = make_noisy_classifier(o);
  a.noisy_train.lr = a.lr.value_or(1e-3);
  a.noisy_train.random_flip = a.train.random_flip;
  Progress bar("noisy classifier", a.noisy_train.steps);
  a.noisy_train.progress = [&](int64_t step, int64_t, double loss) {
    char b[48];
    std::snprintf(b, sizeof b, "loss %.4f", loss);
    bar.update(step, b);
  };
  train_noisy_classifier(*net, diffusion, tr.x, tr.labels, a.noisy_train);
  bar.finish();
  nlohmann::json meta = {{"command", command_line()},
                         {"data", a.data},
                         {"test", test},
                         {"train", {{"steps", a.noisy_train.steps}, {"batch", a.noisy_train.batch},
                                    {"lr", a.noisy_train.lr}, {"seed", a.noisy_train.seed},
                                    {"random_flip", a.noisy_train.random_flip}}}};
  std::vector<BandAccuracy> bands;
  if (te.x.defined()) {
    bands = noisy_accuracy_by_band(as_noisy_classifier(net), diffusion, te.x, te.labels, a.bands);
    meta["accuracy_by_band"] = bands_json(bands);
    meta["test_accuracy"] = mean_accuracy(bands);
  }
  save_noisy_classifier(a.out, *net, diffusion, meta);
  if (!bands.empty()) print_bands(bands, test);
  std::printf("noisy classifier (%s, %lld classes, %s T=%lld) → %s\n", o.arch.c_str(),
              static_cast<long long>(o.num_classes), to_string(diffusion.schedule).c_str(),
              static_cast<long long>(diffusion.timesteps), a.out.c_str());
}

void run_train(TrainArgs& a) {
  if (a.noisy) return run_train_noisy(a);
  check_writable(a.out);
  if (a.lr) a.train.lr = *a.lr;
  auto tr = load_labelled(a.data);
  ImagesWithLabels te;
  if (!a.test.empty()) te = load_labelled(a.test);
  a.net.in_channels = tr.x.size(1);
  a.net.image_size = tr.x.size(2);
  a.net.num_classes = tr.num_classes;
  Classifier net(a.net);
  const int64_t per_epoch = (tr.x.size(0) + a.train.batch - 1) / a.train.batch;
  Progress bar("classifier", per_epoch * a.train.epochs);
  a.train.progress = [&](int64_t step, int64_t, double loss) {
    char b[48];
    std::snprintf(b, sizeof b, "loss %.4f", loss);
    bar.update(step, b);
  };
  std::vector<double> accs;
  a.train.on_epoch = [&](int64_t epoch, double acc) {
    accs.push_back(acc);
    if (!global_options().quiet && !std::isnan(acc))
      std::cerr << "\nepoch " << epoch << ": test accuracy " << acc << "\n";
  };
  train_classifier(net, tr.x, tr.y, a.train, te.x, te.y);
  bar.finish();
  nlohmann::json meta = {{"command", command_line()},
                         {"data", a.data},
                         {"test", a.test},
                         {"train", {{"epochs", a.train.epochs}, {"batch", a.train.batch}, {"lr", a.train.lr},
                                    {"seed", a.train.seed}, {"random_flip", a.train.random_flip}}}};
  if (!accs.empty() && !std::isnan(accs.back())) meta["test_accuracy"] = accs.back();
  save_classifier(a.out, net, meta);
  if (!accs.empty() && !std::isnan(accs.back()))
    std::printf("test accuracy %.4f on %s → %s\n", accs.back(), a.test.c_str(), a.out.c_str());
}

}  // namespace

void register_classifier(CLI::App& app) {
  auto* c = app.add_subcommand("classifier", "classifiers: the small one behind FID and IS on 28/32-pixel data, and (--noisy) noise-aware ones for classifier guidance (train, eval)");
  c->require_subcommand(1);
  {
    auto a = std::make_shared<TrainArgs>();
    auto* t = c->add_subcommand("train", "train the classifier on a labelled image set");
    t->add_option("--data", a->data, "labelled images (fashion-mnist, idx:…, cifar10:DIR, folder:DIR); with --noisy also points (toy:8gaussians, toy:moons)")->capture_default_str();
    t->add_option("--test", a->test, "held-out images scored after every epoch (\"\" for none)")->capture_default_str();
    t->add_option("--out,-o", a->out, "the classifier file (.safetensors)")->required();
    t->add_option("--epochs", a->train.epochs, "passes over the data (not with --noisy: --steps)")->capture_default_str();
    t->add_option("--batch", a->train.batch, "images per step")->capture_default_str();
    t->add_option("--lr", a->lr, "Adam learning rate, cosine-decayed [2e-3; --noisy 1e-3]");
    t->add_option("--seed", a->train.seed, "seed of shuffles, flips and initialisation")->capture_default_str();
    t->add_option("--width", a->net.width, "channels of the first stage (then 2×, 4×)")->capture_default_str();
    t->add_option("--feature-dim", a->net.feature_dim, "size of the feature layer (FID)")->capture_default_str();
    t->add_option("--dropout", a->net.dropout, "dropout before the last layer")->capture_default_str();
    t->add_flag("!--no-flip", a->train.random_flip, "no random horizontal flips");
    auto* g = t->add_option_group("noise-aware (--noisy)", "a classifier p(y | x_t, t) for classifier guidance");
    g->add_flag("--noisy", a->noisy,
                "train a noise-aware classifier on x_t = q_sample(x0, t), t uniform (images: the U-Net's "
                "downsampling half; points such as toy:8gaussians: an MLP)");
    g->add_option("--like", a->like, "take the diffusion settings (schedule, T) of this model, the one to guide");
    a->diffusion.add(t, false);
    g->add_option("--steps", a->noisy_train.steps, "training steps")->capture_default_str();
    g->add_option("--channel-mult", a->channel_mult, "channel multipliers of the levels (images)")->capture_default_str();
    g->add_option("--res-blocks", a->noisy_net.num_res_blocks, "ResNet blocks per level (images)")->capture_default_str();
    g->add_option("--hidden", a->noisy_net.hidden, "MLP width (points)")->capture_default_str();
    g->add_option("--blocks", a->noisy_net.blocks, "MLP residual blocks (points)")->capture_default_str();
    g->add_option("--size", a->data_size, "points drawn from a toy:NAME distribution")->capture_default_str();
    g->add_option("--bands", a->bands, "timestep bands of the accuracy report")->capture_default_str();
    t->callback([a] {
      if (!a->noisy && (a->diffusion.schedule || a->diffusion.timesteps || a->diffusion.mean_type ||
                        a->diffusion.var_type || !a->like.empty()))
        throw InvalidArgument("--like and the diffusion flags apply to noise-aware classifiers only (add --noisy)");
      if (a->noisy) {
        a->noisy_train.batch = a->train.batch;
        a->noisy_train.seed = a->train.seed;
      }
      run_train(*a);
    });
  }
  {
    auto model = std::make_shared<std::string>();
    auto data = std::make_shared<std::string>("fashion-mnist:test");
    auto json = std::make_shared<bool>(false);
    auto* e = c->add_subcommand("eval", "accuracy of a classifier on a labelled image set");
    e->add_option("--model,-m", *model, "classifier .safetensors")->required();
    e->add_option("--data", *data, "labelled images")->capture_default_str();
    e->add_flag("--json", *json, "print JSON");
    auto bands = std::make_shared<int64_t>(5);
    e->add_option("--bands", *bands, "timestep bands (noise-aware classifiers)")->capture_default_str();
    e->callback([model, data, json, bands] {
      std::optional<LoadedNoisyClassifier> noisy;
      try {
        noisy = load_noisy_classifier(*model);
      } catch (const FormatError&) {
      }
      if (noisy) {
        std::string spec = *data;
        if (noisy->net->options().arch == "mlp" && spec == "fashion-mnist:test")
          spec = noisy->meta.value("data", std::string("toy:8gaussians"));
        auto d = labelled_items(spec, 10000, 1);
        auto r = noisy_accuracy_by_band(as_noisy_classifier(noisy->net), noisy->diffusion, d.x, d.labels, *bands);
        if (*json)
          std::cout << nlohmann::json({{"accuracy_by_band", bands_json(r)}, {"accuracy", mean_accuracy(r)},
                                       {"count", d.x.size(0)}, {"data", spec}})
                           .dump()
                    << "\n";
        else
          print_bands(r, spec);
        return;
      }
      auto net = load_classifier(*model);
      auto d = load_labelled(*data);
      const double acc = classifier_accuracy(*net, d.x, d.y);
      if (*json)
        std::cout << nlohmann::json({{"accuracy", acc}, {"count", d.x.size(0)}, {"data", *data}}).dump() << "\n";
      else
        std::printf("accuracy %.4f on %lld images of %s\n", acc, static_cast<long long>(d.x.size(0)), data->c_str());
    });
  }
}

}  // namespace ddpm::cli

// ddpm classifier train | eval: the small classifier behind FID and IS for 28/32-pixel data sets.
#include <cmath>
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/models/classifier.h"
#include "ddpm/store/classifier.h"
#include "ddpm/train/classifier.h"

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
  ClassifierOptions net;
  ClassifierTrainOptions train;
};

void run_train(TrainArgs& a) {
  check_writable(a.out);
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
  auto* c = app.add_subcommand("classifier", "the small classifier behind FID and IS on 28/32-pixel data (train, eval)");
  c->require_subcommand(1);
  {
    auto a = std::make_shared<TrainArgs>();
    auto* t = c->add_subcommand("train", "train the classifier on a labelled image set");
    t->add_option("--data", a->data, "labelled images (fashion-mnist, idx:…, cifar10:DIR, folder:DIR)")->capture_default_str();
    t->add_option("--test", a->test, "held-out images scored after every epoch (\"\" for none)")->capture_default_str();
    t->add_option("--out,-o", a->out, "the classifier file (.safetensors)")->required();
    t->add_option("--epochs", a->train.epochs, "passes over the data")->capture_default_str();
    t->add_option("--batch", a->train.batch, "images per step")->capture_default_str();
    t->add_option("--lr", a->train.lr, "Adam learning rate (cosine-decayed)")->capture_default_str();
    t->add_option("--seed", a->train.seed, "seed of shuffles, flips and initialisation")->capture_default_str();
    t->add_option("--width", a->net.width, "channels of the first stage (then 2×, 4×)")->capture_default_str();
    t->add_option("--feature-dim", a->net.feature_dim, "size of the feature layer (FID)")->capture_default_str();
    t->add_option("--dropout", a->net.dropout, "dropout before the last layer")->capture_default_str();
    t->add_flag("!--no-flip", a->train.random_flip, "no random horizontal flips");
    t->callback([a] { run_train(*a); });
  }
  {
    auto model = std::make_shared<std::string>();
    auto data = std::make_shared<std::string>("fashion-mnist:test");
    auto json = std::make_shared<bool>(false);
    auto* e = c->add_subcommand("eval", "accuracy of a classifier on a labelled image set");
    e->add_option("--model,-m", *model, "classifier .safetensors")->required();
    e->add_option("--data", *data, "labelled images")->capture_default_str();
    e->add_flag("--json", *json, "print JSON");
    e->callback([model, data, json] {
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

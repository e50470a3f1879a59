// ddpm fid | is | sweep: sample quality with a feature network (the project's classifier), against a data split.
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/eval/metrics.h"
#include "ddpm/io/npy.h"
#include "ddpm/models/classifier.h"
#include "ddpm/store/classifier.h"
#include "ddpm/models/inception.h"
#include "ddpm/sampler_registry.h"
#include "ddpm/serve/generation.h"

namespace ddpm::cli {
namespace {

/// The feature network behind FID and IS: the project's classifier, or the FID Inception.
struct FeatureNet {
  std::string name;
  std::function<at::Tensor(const at::Tensor&)> features;    ///< [N, D]
  std::function<at::Tensor(const at::Tensor&)> probs;       ///< [N, K] p(y|x)
  std::function<void(const at::Tensor&, const std::string&)> check;  ///< throws when the images do not fit
  int64_t num_classes = 0;
};

struct QualityArgs {
  std::string inception, classifier, model, samples, ref = "fashion-mnist", ref_cache, sampler = "ddim", steps_list, plot, csv;
  std::string guide;  ///< a noise-aware classifier guiding the model's unconditional mode
  std::string out_npy;  ///< where to write the scored samples
  std::optional<int64_t> steps;
  int64_t num = 10000, batch = 250, splits = 10;
  double eta = 0.0, guidance = 0.0, classifier_scale = 1.0;
  uint64_t seed = 0;
  bool json = false;
  DiffusionFlags diffusion;
};

/// Images from a model (generated), with their classes balanced (item i of class i mod K) when the model is
/// class-conditional or a classifier guides it; `labels` gets those classes (undefined when there are none).
at::Tensor generate(const QualityArgs& a, const Model& h, const std::string& name, int64_t steps,
                    Progress* bar, int64_t* done, at::Tensor* labels = nullptr) {
  if (!h.is_image()) throw InvalidArgument("FID and IS need an image model");
  GenerationRequest r;
  r.sampler.name = name;
  r.sampler.eta = a.eta;
  r.sampler.steps = steps;
  r.sampler.require_one_of({"ddpm", "ddim", "dpm++"});
  r.sampler.validate();
  r.guidance = a.guidance;
  attach_classifier(r, a.guide, a.classifier_scale, h);
  if (r.classifier && a.guidance != 0.0) throw InvalidArgument("give --guidance or --guide, not both");
  if (!r.classifier && a.classifier_scale != 1.0) throw InvalidArgument("--classifier-scale needs --guide CLASSIFIER");
  const int64_t classes = r.classifier ? r.classifier_classes : h.num_classes;
  if (a.guidance != 0.0 && classes == 0) throw InvalidArgument("--guidance needs a class-conditional model");
  auto d = r.sampler.process(h.diffusion);
  SampleOptions base;
  base.clip_denoised = true;
  const Denoiser model = request_denoiser(h, r, base);
  auto gen = compat::make_cpu_generator(a.seed);
  std::vector<at::Tensor> parts, ys;
  for (int64_t i = 0; i < a.num; i += a.batch) {
    const int64_t n = std::min(a.batch, a.num - i);
    auto x_T = at::randn(h.batch_shape(n), gen);
    SampleOptions o = base;
    if (classes > 0) {  // balanced classes
      o.y = (at::arange(i, i + n, at::TensorOptions().dtype(at::kLong)) % classes);
      ys.push_back(o.y);
    }
    const int64_t b0 = *done;
    o.progress = [&](int64_t s, int64_t) { bar->update(b0 + s); };
    auto x = run_sampler(r.sampler, d, model, x_T, gen, o);
    *done += steps;
    parts.push_back(x.clamp(-1, 1));
  }
  if (labels) *labels = ys.empty() ? at::Tensor() : at::cat(ys);
  return at::cat(parts);
}

at::Tensor load_images(const std::string& spec, int64_t limit) {
  if (spec.size() > 4 && spec.compare(spec.size() - 4, 4, ".npy") == 0) {
    auto x = read_npy(spec).to(at::kFloat);
    if (x.dim() != 4) throw FormatError("'" + spec + "' must hold images [N, C, H, W] in [-1, 1]");
    return limit > 0 ? x.slice(0, 0, std::min(limit, x.size(0))) : x;
  }
  auto s = load_image_dataset(spec);
  const int64_t n = limit > 0 ? std::min(limit, s.size()) : s.size();
  return to_model_range(s.images.slice(0, 0, n), padded_side(s.images.size(2)));
}

FeatureNet load_feature_net(const QualityArgs& a) {
  if (a.classifier.empty() == a.inception.empty())
    throw InvalidArgument("give the feature network: --classifier FILE (ddpm classifier train) or --inception WEIGHTS");
  FeatureNet f;
  auto batched = [](auto fn) {
    return [fn](const at::Tensor& x) {
      c10::InferenceMode guard;
      std::vector<at::Tensor> parts;
      for (int64_t i = 0; i < x.size(0); i += 50) parts.push_back(fn(x.slice(0, i, std::min(x.size(0), i + 50))));
      return at::cat(parts);
    };
  };
  if (!a.classifier.empty()) {
    auto c = load_classifier(a.classifier);
    f.name = std::filesystem::path(a.classifier).filename().string();
    f.num_classes = c->options().num_classes;
    f.features = [c](const at::Tensor& x) { return classifier_apply(*c, x, true); };
    f.probs = [c](const at::Tensor& x) { return at::softmax(classifier_apply(*c, x, false).to(at::kDouble), 1); };
    f.check = [c](const at::Tensor& x, const std::string& what) {
      const auto& o = c->options();
      if (x.size(1) != o.in_channels || x.size(2) != o.image_size || x.size(3) != o.image_size)
        throw InvalidArgument(what + " are " + std::to_string(x.size(1)) + "×" + std::to_string(x.size(2)) + "×" +
                              std::to_string(x.size(3)) + "; the classifier takes " + std::to_string(o.in_channels) +
                              "×" + std::to_string(o.image_size) + "×" + std::to_string(o.image_size));
    };
  } else {
    auto net = load_fid_inception(a.inception);
    f.name = "FID Inception (" + std::filesystem::path(a.inception).filename().string() + ")";
    f.num_classes = 1008;
    f.features = batched([net](const at::Tensor& x) { return net->features(x.to(at::kFloat)); });
    f.probs = batched([net](const at::Tensor& x) {
      return at::softmax(net->logits(net->features(x.to(at::kFloat))).to(at::kDouble), 1);
    });
    f.check = [](const at::Tensor& x, const std::string& what) {
      if (x.size(1) != 1 && x.size(1) != 3) throw InvalidArgument(what + " must have 1 or 3 channels for Inception");
    };
  }
  return f;
}

FeatureStats reference_stats(const QualityArgs& a, FeatureNet& c) {
  const std::string desc = "features of '" + a.ref + "' by '" + c.name + "'";
  if (!a.ref_cache.empty() && std::filesystem::exists(a.ref_cache)) {
    auto s = load_feature_stats(a.ref_cache);
    if (s.description != desc)
      throw ConfigMismatch("'" + a.ref_cache + "' holds " + s.description + ", not " + desc +
                           " (delete it or name another --ref-cache)");
    return s;
  }
  auto x = load_images(a.ref, 0);
  c.check(x, "the reference images");
  auto s = feature_stats(c.features(x));
  s.description = desc;
  if (!a.ref_cache.empty()) save_feature_stats(a.ref_cache, s);
  return s;
}

struct Scores {
  double fid, is_mean, is_std;
  int64_t count;
  std::optional<double> accuracy;  ///< the feature classifier's agreement with the classes asked for
};

Scores score(const QualityArgs& a, FeatureNet& c, const FeatureStats& ref, const at::Tensor& x,
             const at::Tensor& labels = {}) {
  c.check(x, "the samples");
  auto feats = c.features(x);
  auto probs = c.probs(x);
  auto [m, sd] = inception_score(probs, std::min<int64_t>(a.splits, x.size(0)));
  Scores s{frechet_distance(feature_stats(feats), ref), m, sd, x.size(0), std::nullopt};
  // Only the project's classifier names the same classes as the model (Inception's 1008 are ImageNet's).
  if (labels.defined() && !a.classifier.empty() && labels.max().item<int64_t>() < c.num_classes)
    s.accuracy = probs.argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
  return s;
}

void run_quality(QualityArgs& a, const std::string& what) {
  check_writable(a.ref_cache);
  check_writable(a.out_npy);
  if (a.num < 2) throw InvalidArgument("--num must be at least 2");
  if (a.model.empty() == a.samples.empty()) throw InvalidArgument("give --model (generate) or --samples (score images), one of them");
  auto cls = load_feature_net(a);
  auto ref = reference_stats(a, cls);
  at::Tensor x, labels;
  std::string source;
  double seconds = 0;
  int64_t steps = 0;
  if (!a.model.empty()) {
    auto h = open_cli_model(a.model, a.diffusion);
    SamplerSpec choice;
    choice.name = a.sampler;
    choice.steps = a.steps;
    steps = choice.steps_for(h.diffusion);
    Progress bar("generate " + a.sampler + " " + std::to_string(steps) + " steps", (a.num + a.batch - 1) / a.batch * steps);
    int64_t done = 0;
    auto t0 = std::chrono::steady_clock::now();
    x = generate(a, h, a.sampler, steps, &bar, &done, &labels);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bar.finish();
    char eta[32] = "";
    if (a.sampler == "ddim" && a.eta != 0) std::snprintf(eta, sizeof eta, ", eta %g", a.eta);
    char guide[96] = "";
    if (a.guidance != 0) std::snprintf(guide, sizeof guide, ", guidance w %g", a.guidance);
    if (!a.guide.empty()) std::snprintf(guide, sizeof guide, ", classifier scale %g", a.classifier_scale);
    source = a.model + " (" + a.sampler + eta + ", " + std::to_string(steps) + " steps" + guide +
             (global_options().attention == "bf16" ? ", bf16 attention" : "") + ")";
  } else {
    x = load_images(a.samples, a.num);
    source = a.samples;
  }
  if (!a.out_npy.empty()) write_npy(a.out_npy, x);
  auto s = score(a, cls, ref, x, labels);
  nlohmann::json j = {{"fid", s.fid},      {"is", s.is_mean},     {"is_std", s.is_std}, {"count", s.count},
                      {"reference", a.ref}, {"ref_count", ref.count}, {"source", source}, {"features", cls.name}};
  if (seconds > 0) j["seconds"] = seconds;
  if (s.accuracy) j["accuracy"] = *s.accuracy;
  if (!a.guide.empty()) {
    j["guide"] = a.guide;
    j["classifier_scale"] = a.classifier_scale;
  }
  if (a.guidance != 0) j["guidance"] = a.guidance;
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else if (what == "is") {
    std::printf("IS %.3f ± %.3f (%lld images of %s, %lld splits; at most %lld)\n", s.is_mean, s.is_std,
                static_cast<long long>(s.count), source.c_str(), static_cast<long long>(a.splits),
                static_cast<long long>(cls.num_classes));
  } else {
    std::printf("FID %.4f against %s (%lld images of %s; IS %.3f ± %.3f", s.fid, a.ref.c_str(),
                static_cast<long long>(s.count), source.c_str(), s.is_mean, s.is_std);
    if (s.accuracy) std::printf("; class accuracy %.4f", *s.accuracy);
    std::printf(")\n");
  }
}

void run_sweep(QualityArgs& a) {
  check_writable(a.csv);
  check_writable(a.plot);
  check_writable(a.ref_cache);
  if (a.model.empty()) throw InvalidArgument("sweep needs --model");
  auto counts = parse_int_list(a.steps_list, "--steps-list");
  auto samplers = split_list(a.sampler);
  auto cls = load_feature_net(a);
  auto ref = reference_stats(a, cls);
  auto h = open_cli_model(a.model, a.diffusion);
  int64_t total = 0;
  for (size_t k = 0; k < samplers.size(); ++k)
    for (int64_t s : counts) total += (a.num + a.batch - 1) / a.batch * s;
  Progress bar("sweep", total);
  int64_t done = 0;
  nlohmann::json rows = nlohmann::json::array();
  std::vector<LineSeries> lines;
  std::ostringstream csv;
  csv << "sampler,steps,fid,is,seconds\n";
  for (size_t k = 0; k < samplers.size(); ++k) {
    LineSeries ls;
    ls.label = samplers[k];
    ls.color = palette(static_cast<int>(k));
    for (int64_t steps : counts) {
      auto t0 = std::chrono::steady_clock::now();
      auto x = generate(a, h, samplers[k], steps, &bar, &done);
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      auto s = score(a, cls, ref, x);
      rows.push_back({{"sampler", samplers[k]}, {"steps", steps}, {"fid", s.fid}, {"is", s.is_mean}, {"seconds", sec}});
      csv << samplers[k] << "," << steps << "," << s.fid << "," << s.is_mean << "," << sec << "\n";
      ls.x.push_back(static_cast<double>(steps));
      ls.y.push_back(s.fid);
    }
    lines.push_back(ls);
  }
  bar.finish();
  if (!a.csv.empty()) write_file_atomic(a.csv, csv.str());
  if (!a.plot.empty()) {
    PlotOptions po;
    po.title = "FID against sampling steps (" + std::to_string(a.num) + " samples)";
    po.xlabel = "steps";
    po.ylabel = "FID (log scale)";
    po.log_y = true;
    po.height = 600;
    save_line_plot_png(a.plot, lines, po);
  }
  if (a.json) {
    std::cout << rows.dump() << "\n";
  } else {
    std::printf("%-8s %6s %10s %8s %9s\n", "sampler", "steps", "FID", "IS", "seconds");
    for (const auto& r : rows)
      std::printf("%-8s %6lld %10.4f %8.3f %9.1f\n", r["sampler"].get<std::string>().c_str(),
                  static_cast<long long>(r["steps"].get<int64_t>()), r["fid"].get<double>(), r["is"].get<double>(),
                  r["seconds"].get<double>());
  }
}

void add_common(CLI::App* c, QualityArgs& a) {
  c->add_option("--classifier,-c", a.classifier, "feature network: a classifier from `ddpm classifier train`");
  c->add_option("--inception", a.inception,
                "feature network: the FID Inception-v3 with these weights (safetensors; scripts/convert_inception.py)");
  c->add_option("--model,-m", a.model, "generate the samples from this model");
  a.diffusion.add(c, false);
  c->add_option("--ref", a.ref, "reference images: a data split (fashion-mnist, fashion-mnist:test, …) or .npy")
      ->capture_default_str();
  c->add_option("--ref-cache", a.ref_cache, "cache the reference statistics in this file (.safetensors)");
  c->add_option("--num,-n", a.num, "images to generate or score")->capture_default_str();
  c->add_option("--batch", a.batch, "images generated at once")->capture_default_str();
  c->add_option("--eta", a.eta, "DDIM η")->capture_default_str();
  c->add_option("--guidance,-w", a.guidance, "classifier-free guidance weight w (classes are balanced)")->capture_default_str();
  c->add_option("--guide", a.guide,
                "guide the model's unconditional mode with this noise-aware classifier (ddpm classifier train --noisy); "
                "classes are balanced and the class accuracy of the samples is reported");
  c->add_option("--classifier-scale", a.classifier_scale, "classifier guidance scale s (with --guide)")->capture_default_str();
  c->add_option("--seed", a.seed, "seed of the samples")->capture_default_str();
  c->add_option("--splits", a.splits, "IS splits")->capture_default_str();
  c->add_flag("--json", a.json, "print JSON");
}

}  // namespace

void register_quality(CLI::App& app) {
  for (const std::string what : {"fid", "is"}) {
    auto a = std::make_shared<QualityArgs>();
    auto* c = app.add_subcommand(what, what == "fid" ? "Fréchet distance of samples to a data split in a classifier's features"
                                                     : "Inception Score of samples with a classifier's p(y|x)");
    add_common(c, *a);
    c->add_option("--samples", a->samples, "score these images instead: .npy [N, C, H, W] in [-1, 1], or a data spec");
    c->add_option("--sampler", a->sampler, "ddpm, ddim or dpm++")->capture_default_str();
    c->add_option("--steps", a->steps, "sampling steps [T for ddpm, 50 for ddim, 20 for dpm++]");
    c->add_option("--out-npy,-o", a->out_npy, "also write the scored images to this .npy");
    c->callback([a, what] { run_quality(*a, what); });
  }
  auto a = std::make_shared<QualityArgs>();
  auto* c = app.add_subcommand("sweep", "FID and time for each sampler over step counts (the DDIM paper's Table 1)");
  add_common(c, *a);
  a->sampler = "ddim,dpm++";
  a->steps_list = "10,20,50,100";
  c->add_option("--samplers", a->sampler, "comma-separated: ddpm, ddim, dpm++")->capture_default_str();
  c->add_option("--steps-list", a->steps_list, "comma-separated step counts")->capture_default_str();
  c->add_option("--csv", a->csv, "write the table as CSV");
  c->add_option("--plot", a->plot, "plot FID against steps to this PNG");
  c->callback([a] { run_sweep(*a); });
}

}  // namespace ddpm::cli

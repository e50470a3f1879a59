// ddpm sample: draws samples from a trained checkpoint or an exact denoiser with any sampler.
#include <c10/core/InferenceMode.h>

#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/io/file.h"
#include "ddpm/errors.h"
#include "ddpm/io/npy.h"
#include "ddpm/data/points.h"
#include "ddpm/sampler_registry.h"
#include "ddpm/serve/generation.h"

namespace ddpm::cli {
namespace {

struct SampleArgs {
  std::string model, init, out_npy, plot, json_path;
  SamplerSpec sampler;
  double guidance = 0.0;
  std::optional<double> guidance_scale;
  std::optional<int64_t> klass;
  std::string classifier;
  double classifier_scale = 1.0;
  int64_t num = 1000, batch = kDefaultBatch;
  uint64_t seed = 0;
  bool json = false, clip = false, no_clip = false, per_class = false;
  std::string png_dir;
  DiffusionFlags diffusion;
};

void run_sample(SampleArgs& a) {
  a.sampler.validate();
  if (a.num < 1) throw InvalidArgument("--num must be at least 1");
  if (a.batch < 0) throw InvalidArgument("--batch must be at least 1 (or 0: every item at once)");
  check_writable(a.out_npy);
  check_writable(a.plot);
  if (a.guidance_scale) a.guidance = *a.guidance_scale - 1.0;  // diffusers' scale s = 1 + w
  auto h = open_cli_model(a.model, a.diffusion);
  const bool images = h.is_image();
  const int64_t steps = a.sampler.steps_for(h.diffusion);

  GenerationRequest req;
  req.sampler = a.sampler;
  req.guidance = a.guidance;
  req.klass = a.klass;
  req.per_class = a.per_class;
  req.num = a.num;
  req.seed = a.seed;
  req.batch = a.batch;
  if (a.clip) req.clip = true;
  if (a.no_clip) req.clip = false;
  if (a.per_class && h.num_classes == 0 && a.classifier.empty()) throw InvalidArgument("--per-class needs a class-conditional model");
  if (a.per_class && a.klass) throw InvalidArgument("give --per-class or --class, not both");
  if (a.guidance != 0.0 && !a.klass && !a.per_class) throw InvalidArgument("--guidance needs --class K or --per-class");
  attach_classifier(req, a.classifier, a.classifier_scale, h);
  if (!a.init.empty()) {
    auto x_T = read_npy(a.init);
    if (!x_T.is_floating_point()) throw FormatError("'" + a.init + "' must hold floating-point values");
    x_T = x_T.to(at::kFloat);
    auto shape = h.batch_shape(x_T.size(0));
    if (!x_T.sizes().equals(shape)) {
      std::vector<int64_t> want = {-1};
      want.insert(want.end(), h.item_shape.begin(), h.item_shape.end());
      throw FormatError("'" + a.init + "' has shape " + std::string(c10::str(x_T.sizes())) + "; the model needs " +
                        std::string(c10::str(at::IntArrayRef(want))) + " (-1 = any count)");
    }
    req.x_T = x_T;
  }

  const int64_t batches = (req.count(h) + req.batch_size(h) - 1) / req.batch_size(h);
  Progress bar("sample " + a.sampler.name + " " + std::to_string(steps) + " steps", a.sampler.model_calls(h.diffusion) * batches);
  GenerationCallbacks cb;
  cb.progress = [&](int64_t done, int64_t) { bar.update(done); };
  auto x = generate(h, req, cb);
  bar.finish();
  if (a.per_class) a.num = x.size(0);

  if (!a.out_npy.empty()) write_npy(a.out_npy, x);
  if (!a.png_dir.empty() && images) {
    ensure_directory(a.png_dir);
    save_images(a.png_dir + "/sample_", x);
  }
  if (!a.plot.empty() && images) {
    save_grid(a.plot, x, a.per_class ? req.num : static_cast<int64_t>(std::ceil(std::sqrt(x.size(0)))));
  } else if (!a.plot.empty()) {
    if (x.dim() != 2 || x.size(1) != 2) throw InvalidArgument("--plot draws 2-D points; these samples have shape " +
                                                              std::string(c10::str(x.sizes())));
    std::vector<ScatterLayer> layers;
    // The data underneath: the checkpoint's training set, or draws from the exact mixture.
    PointSet ref;
    if (h.mixture) {
      auto g2 = compat::make_cpu_generator(a.seed + 1);
      ref = sample_mixture(*h.mixture, 5000, g2);
    } else if (h.meta.contains("data") && h.meta["data"].value("spec", std::string()).rfind("toy:", 0) == 0) {
      ref = load_points(h.meta["data"]["spec"], 5000, h.meta["data"].value("seed", uint64_t{0}));
    }
    if (ref.size() > 0) {
      auto r = ref.x.contiguous();
      layers.push_back({std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel()), {170, 170, 170},
                        0.35f, 1.5f, "data"});
    }
    auto s = x.to(at::kFloat).contiguous();
    layers.push_back({std::vector<float>(s.data_ptr<float>(), s.data_ptr<float>() + s.numel()), palette(3), 0.5f, 1.8f,
                      "samples"});
    PlotOptions po;
    po.title = a.sampler.name + " " + std::to_string(steps) + " steps" + (a.klass ? ", class " + std::to_string(*a.klass) : "") +
               (a.guidance != 0 ? ", w " + std::to_string(a.guidance).substr(0, 4) : "");
    po.xlabel = "x1";
    po.ylabel = "x2";
    save_scatter_png(a.plot, layers, po);
  }
  auto flat = x.to(at::kDouble).reshape({x.size(0), -1});
  auto mean = flat.mean(0), std = flat.std(0);
  nlohmann::json j = {{"num", x.size(0)},
                      {"sampler", a.sampler.name},
                      {"steps", steps},
                      {"eta", a.sampler.eta},
                      {"mean", std::vector<double>(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel())},
                      {"std", std::vector<double>(std.data_ptr<double>(), std.data_ptr<double>() + std.numel())}};
  if (a.json) std::cout << j.dump() << "\n";
  else if (!global_options().quiet) {
    std::cerr << "drew " << x.size(0) << " samples";
    if (!a.out_npy.empty()) std::cerr << " → " << a.out_npy;
    if (!a.plot.empty()) std::cerr << " (plot " << a.plot << ")";
    std::cerr << "\n";
  }
}

}  // namespace

void register_sample(CLI::App& app) {
  auto a = std::make_shared<SampleArgs>();
  auto* c = app.add_subcommand("sample", "draw samples from a model: DDPM, DDIM, DPM-Solver++ or annealed Langevin");
  c->add_option("--model,-m", a->model,
                "CHECKPOINT.safetensors, gaussian:mean=M,std=S,dim=D, gmm:FILE.json or gmm:8gaussians")
      ->required();
  a->diffusion.add(c, false);
  add_sampler_flags(c, a->sampler);
  c->add_option("--steps", a->sampler.steps,
                "sampling steps (respaced) [T for ddpm, 50 for ddim, 20 for dpm++; noise levels for langevin: 100]");
  c->add_option("--spacing", a->sampler.spacing,
                "which steps: ddim, even, quadratic, logsnr, linspace, leading, trailing [dpm++ and langevin: logsnr "
                "(trailing on the cosine schedule); ddim otherwise]");
  c->add_option("--guidance,-w", a->guidance, "classifier-free guidance weight w (needs --class)")->capture_default_str();
  c->add_option("--guidance-scale", a->guidance_scale, "the same as a scale s = 1 + w (diffusers' guidance_scale)")
      ->excludes("--guidance");
  c->add_option("--class", a->klass, "class label to sample");
  c->add_option("--classifier", a->classifier,
                "classifier guidance (Dhariwal & Nichol) towards --class: a file of `ddpm classifier train --noisy`, or 'exact' = the closed-form noisy classifier "
                "of a gmm: model");
  c->add_option("--classifier-scale", a->classifier_scale, "classifier guidance scale s")->capture_default_str();
  c->add_option("--num,-n", a->num, "number of samples")->capture_default_str();
  c->add_option("--batch", a->batch,
                "items through the network at once, 0 = all (memory grows with it; results depend on --seed and --batch, "
                "and the first batch equals a run of that many items alone)")
      ->capture_default_str();
  c->add_option("--seed", a->seed, "seed of x_T and the sampler's noise")->capture_default_str();
  c->add_option("--init", a->init, "start from this x_T (.npy, N×D)");
  c->add_flag("--clip", a->clip, "clip x̂0 to [-1, 1] at every step (default for images)");
  c->add_flag("--no-clip", a->no_clip, "never clip x̂0");
  c->add_flag("--per-class", a->per_class, "one row of --num samples per class (class-conditional models)");
  c->add_option("--png-dir", a->png_dir, "also write each image as its own PNG into this folder");
  c->add_option("--out-npy,-o", a->out_npy, "write the samples to this .npy");
  c->add_option("--plot", a->plot, "write a PNG: a grid of image samples, or a scatter plot of 2-D samples over the data");
  c->add_flag("--json", a->json, "print the sample mean and std as JSON");
  c->callback([a] { run_sample(*a); });
}

}  // namespace ddpm::cli

#include "ddpm/serve/generation.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "ddpm/compat.h"
#include "ddpm/errors.h"

namespace ddpm {
namespace {

/// Shortest text that reads back as the same double.
std::string number(double v) { return nlohmann::json(v).dump(); }

/// A path or value as one shell word.
std::string shell_word(const std::string& s) {
  bool plain = !s.empty();
  for (char c : s) plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || std::string("-_./:=,+").find(c) != std::string::npos);
  if (plain) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

int64_t GenerationRequest::count(const Model& model) const {
  if (x_T.defined()) return x_T.size(0);
  if (edit_from.defined()) return edit_from.size(0);
  return per_class ? num * (classifier ? classifier_classes : model.num_classes) : num;
}

void validate_generation(const Model& model, const GenerationRequest& r) {
  r.sampler.validate();
  if (r.num < 1) throw InvalidArgument("the number of samples must be at least 1 (got " + std::to_string(r.num) + ")", "num");
  const int64_t classes = r.classifier ? r.classifier_classes : model.num_classes;
  if (r.classifier && r.guidance != 0.0)
    throw InvalidArgument("give classifier-free guidance or a classifier, not both", "guidance");
  if (r.classifier && !r.klass && !r.per_class)
    throw InvalidArgument("classifier guidance needs a class to guide towards (or all classes)", "class");
  if (r.classifier && !std::isfinite(r.classifier_scale))
    throw InvalidArgument("the classifier scale must be a finite number", "classifier_scale");
  if (r.per_class && classes == 0) throw InvalidArgument("sampling all classes needs a class-conditional model (or a classifier)", "class");
  if (r.per_class && r.klass) throw InvalidArgument("give one class or all classes, not both", "class");
  if (r.klass && classes == 0)
    throw InvalidArgument("this model is unconditional: it takes no class (give a classifier to guide it)", "class");
  if (r.klass && (*r.klass < 0 || *r.klass >= classes))
    throw InvalidArgument("class " + std::to_string(*r.klass) + " is out of range (the " +
                              (r.classifier ? "classifier" : "model") + " has classes 0.." + std::to_string(classes - 1) + ")",
                          "class");
  if (!std::isfinite(r.guidance)) throw InvalidArgument("the guidance weight must be a finite number", "guidance");
  if (r.guidance != 0.0 && !r.klass && !r.per_class)
    throw InvalidArgument("guidance needs a class (or all classes)", "guidance");
  if (r.edit_from.defined()) {
    if (!(r.strength >= 0.0 && r.strength <= 1.0)) throw InvalidArgument("the strength must be between 0 and 1", "strength");
    if (r.x_T.defined() || r.per_class)
      throw InvalidArgument("an edit starts from its images: give no x_T and not all classes", "strength");
    std::vector<int64_t> want = model.batch_shape(r.edit_from.size(0));
    if (!r.edit_from.is_floating_point() || !r.edit_from.sizes().equals(want))
      throw InvalidArgument("the images to edit have shape " + std::string(c10::str(r.edit_from.sizes())) +
                                "; the model needs " + std::string(c10::str(at::IntArrayRef(want))),
                            "image");
  }
  if (r.x_T.defined()) {
    std::vector<int64_t> want = model.batch_shape(r.x_T.size(0));
    if (!r.x_T.is_floating_point() || !r.x_T.sizes().equals(want))
      throw InvalidArgument("x_T has shape " + std::string(c10::str(r.x_T.sizes())) + "; the model needs " +
                                std::string(c10::str(at::IntArrayRef(want))),
                            "x_T");
  }
  if (r.x_T.defined() && r.per_class && r.x_T.size(0) != r.num * model.num_classes)
    throw InvalidArgument("with every class, x_T needs " + std::to_string(r.num * model.num_classes) + " items", "x_T");
  (void)r.sampler.timesteps(model.diffusion);  // steps and spacing fit the model
}

at::Tensor generate(const Model& model, const GenerationRequest& r, const GenerationCallbacks& cb) {
  validate_generation(model, r);
  const int64_t n = r.count(model);
  SampleOptions opts;
  opts.clip_denoised = r.clip.value_or(model.is_image());
  const int64_t classes = r.classifier ? r.classifier_classes : model.num_classes;
  if (r.per_class) {
    opts.y = at::arange(classes, at::TensorOptions().dtype(at::kLong)).repeat_interleave(r.num);
  } else if (r.klass) {
    opts.y = at::full({n}, *r.klass, at::TensorOptions().dtype(at::kLong));
  }
  Denoiser denoiser = r.guidance != 0.0 ? model.guided(r.guidance) : model.denoiser;
  if (r.classifier) {
    std::optional<int64_t> null;
    if (model.num_classes > 0) null = model.null_label;
    if (r.sampler.name == "ddpm") {
      opts.mean_guidance = classifier_mean_guidance(r.classifier, r.classifier_scale);
      denoiser = [inner = model.denoiser, null](const at::Tensor& x, const at::Tensor& t, const at::Tensor&) {
        at::Tensor y;
        if (null) y = at::full({x.size(0)}, *null, at::TensorOptions().dtype(at::kLong).device(x.device()));
        return inner(x, t, y);
      };
    } else {
      denoiser = classifier_guidance(model.denoiser, r.classifier, model.diffusion.make().alphas_cumprod(),
                                     r.classifier_scale, model.diffusion.mean_type,
                                     learns_variance(model.diffusion.var_type), null);
    }
  }
  if (cb.cancel) {
    const std::atomic<bool>* flag = cb.cancel;
    denoiser = [flag, inner = std::move(denoiser)](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
      if (flag->load()) throw Cancelled("cancelled");
      return inner(x, t, y);
    };
  }
  auto gen = compat::make_cpu_generator(r.seed);
  at::Tensor x_T = r.x_T.defined() ? r.x_T.to(at::kFloat) : at::randn(model.batch_shape(n), gen);
  auto kept = r.sampler.timesteps(model.diffusion);
  auto process = r.sampler.process(model.diffusion);
  const int64_t T = model.diffusion.timesteps;
  if (r.edit_from.defined() && r.strength < 1.0) {
    if (r.strength == 0.0) return r.edit_from.to(at::kFloat).clone();
    // x_T drawn above is the noise of q_sample: the same seed gives the same noise at every strength.
    const int64_t t0 = std::clamp<int64_t>(std::llround(r.strength * static_cast<double>(T)) - 1, 0, T - 1);
    kept = timesteps_up_to(kept, t0);
    process = model.diffusion.respaced(kept);
    auto full = model.diffusion.make();
    x_T = full.q_sample(r.edit_from.to(at::kFloat), at::full({n}, t0, at::TensorOptions().dtype(at::kLong)), x_T);
  }
  const int64_t steps = static_cast<int64_t>(kept.size());
  if (cb.on_step) {
    opts.on_step = [&](int64_t i, const at::Tensor& x, const at::Tensor& x0) {
      cb.on_step(steps - i, steps, kept[static_cast<size_t>(i)], x, x0);
    };
  }
  opts.progress = cb.progress;
  if (cb.cancel && cb.cancel->load()) throw Cancelled("cancelled");
  return run_sampler(r.sampler, process, denoiser, x_T, gen, opts);
}

std::string sample_command(const std::string& model_path, const GenerationRequest& r, int threads,
                           const std::string& png_dir) {
  std::string c = "ddpm --threads " + std::to_string(threads) + " sample -m " + shell_word(model_path) +
                  " --sampler " + shell_word(r.sampler.name);
  if (r.sampler.steps) c += " --steps " + std::to_string(*r.sampler.steps);
  if (!r.sampler.spacing.empty()) c += " --spacing " + shell_word(r.sampler.spacing);
  if (r.sampler.name == "ddim") c += " --eta " + number(r.sampler.eta);
  if (r.sampler.name == "dpm++" && r.sampler.order != 2) c += " --order " + std::to_string(r.sampler.order);
  if (r.sampler.name == "langevin") {
    c += " --langevin-steps " + std::to_string(r.sampler.langevin.steps_per_level) + " --langevin-scale " +
         number(r.sampler.langevin.step_scale);
  }
  if (r.per_class) c += " --per-class";
  if (r.klass) c += " --class " + std::to_string(*r.klass);
  if (r.guidance != 0.0) c += " --guidance " + number(r.guidance);
  if (r.classifier) c += " --classifier " + shell_word(r.classifier_spec) + " --classifier-scale " + number(r.classifier_scale);
  if (r.clip) c += *r.clip ? " --clip" : " --no-clip";
  c += " -n " + std::to_string(r.num) + " --seed " + std::to_string(r.seed) + " --png-dir " + shell_word(png_dir);
  return c;
}

}  // namespace ddpm

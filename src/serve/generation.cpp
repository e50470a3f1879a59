#include "ddpm/serve/generation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "ddpm/compat.h"
#include "ddpm/errors.h"
#include "ddpm/resources.h"

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

int64_t GenerationRequest::calls(const DiffusionConfig& diffusion) const {
  const int64_t steps = sampler.steps_for(diffusion);
  if (inpaint_mask.defined()) return steps * std::max<int64_t>(1, repaint.resample);
  if (edit_from.defined() && strength < 1.0)
    return static_cast<int64_t>(std::ceil(strength * static_cast<double>(steps))) + 1;
  return sampler.model_calls(diffusion);
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
  if (r.inpaint_mask.defined()) {
    if (!r.edit_from.defined()) throw InvalidArgument("inpainting needs the images to fill in", "image");
    if (r.sampler.name != "ddpm")
      throw InvalidArgument("inpainting runs RePaint over DDPM's steps: use the ddpm sampler (got '" + r.sampler.name + "')", "sampler");
    if (r.strength != 1.0) throw InvalidArgument("inpainting regenerates the masked part at every step: give no strength", "strength");
    if (r.repaint.jump < 1) throw InvalidArgument("jump must be at least 1 (the number of steps RePaint goes back in time at once)", "jump");
    if (r.repaint.resample < 1) throw InvalidArgument("resample must be at least 1 (how often RePaint repeats each jump)", "resample");
    const auto& m = r.inpaint_mask;
    const auto& e = r.edit_from;
    if (m.dim() != 4 || m.size(1) != 1 || (m.size(0) != 1 && m.size(0) != e.size(0)) || m.size(2) != e.size(2) ||
        m.size(3) != e.size(3))
      throw InvalidArgument("the mask has shape " + std::string(c10::str(m.sizes())) + "; it needs [1 or N, 1, " +
                                std::to_string(e.size(2)) + ", " + std::to_string(e.size(3)) + "]",
                            "mask");
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

int64_t GenerationRequest::batch_size(const Model& model) const {
  const int64_t n = count(model);
  return batch > 0 ? std::min(batch, n) : n;
}

uint64_t GenerationRequest::memory(const Model& model) const {
  const int64_t n = count(model), b = batch_size(model);
  uint64_t item = 1;
  for (int64_t d : model.item_shape) item = bytes_of(item, static_cast<uint64_t>(std::max<int64_t>(d, 0)));
  // Every item's x_T and result live through the run; a batch adds the network's activations and the sampler's
  // own tensors (x, x̂0, ε, noise, the solver's history: about 8 per item).
  double net = model.network ? model.network->memory_per_item(false) : 0.0;
  if (net <= 0) net = 16.0 * 8.0 * static_cast<double>(item);  // exact denoisers and TorchScript: a guess
  const long double total = 2.0L * 4 * static_cast<long double>(item) * static_cast<long double>(n) +
                            static_cast<long double>(b) * (static_cast<long double>(net) + 8.0L * 4 * item);
  return total >= 1.8e19L ? std::numeric_limits<uint64_t>::max() : static_cast<uint64_t>(total);
}

Denoiser request_denoiser(const Model& model, const GenerationRequest& r, SampleOptions& opts) {
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
  return denoiser;
}

at::Tensor generate(const Model& model, const GenerationRequest& r, const GenerationCallbacks& cb) {
  validate_generation(model, r);
  const int64_t n = r.count(model), B = r.batch_size(model);
  require_memory(r.memory(model),
                 "generating " + std::to_string(n) + (n == 1 ? " item" : " items") + " in batches of " + std::to_string(B),
                 B > 1 ? "give a smaller batch, or fewer items" : "give fewer items", B > 1 ? "batch" : "num");
  SampleOptions opts;
  opts.clip_denoised = r.clip.value_or(model.is_image());
  const int64_t classes = r.classifier ? r.classifier_classes : model.num_classes;
  at::Tensor labels;
  if (r.per_class) {
    labels = at::arange(classes, at::TensorOptions().dtype(at::kLong)).repeat_interleave(r.num);
  } else if (r.klass) {
    labels = at::full({n}, *r.klass, at::TensorOptions().dtype(at::kLong));
  }
  Denoiser denoiser = request_denoiser(model, r, opts);
  if (cb.cancel) {
    const std::atomic<bool>* flag = cb.cancel;
    denoiser = [flag, inner = std::move(denoiser)](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
      if (flag->load()) throw Cancelled("cancelled");
      return inner(x, t, y);
    };
  }
  if (r.edit_from.defined() && r.strength == 0.0 && !r.inpaint_mask.defined()) return r.edit_from.to(at::kFloat).clone();
  auto gen = compat::make_cpu_generator(r.seed);
  auto kept = r.sampler.timesteps(model.diffusion);
  auto process = r.sampler.process(model.diffusion);
  const int64_t T = model.diffusion.timesteps;
  const bool sdedit = r.edit_from.defined() && r.strength < 1.0 && !r.inpaint_mask.defined();
  int64_t t0 = T - 1;
  if (sdedit) {
    t0 = std::clamp<int64_t>(std::llround(r.strength * static_cast<double>(T)) - 1, 0, T - 1);
    kept = timesteps_up_to(kept, t0);
    process = model.diffusion.respaced(kept);
  }
  const int64_t steps = static_cast<int64_t>(kept.size());
  const int64_t batches = (n + B - 1) / B;
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t off = b * B, nb = std::min(B, n - off);
    SampleOptions o = opts;
    if (labels.defined()) o.y = labels.slice(0, off, off + nb);
    if (cb.on_step) {
      o.on_step = [&](int64_t i, const at::Tensor& x, const at::Tensor& x0) {
        cb.on_step(steps - i, steps, kept[static_cast<size_t>(i)], x, x0);
      };
    }
    if (cb.progress) {
      o.progress = [&, b](int64_t done, int64_t total) { cb.progress(b * total + done, batches * total); };
    }
    // One generator through every batch: the first batch is exactly a run of its size alone.
    at::Tensor x_T = r.x_T.defined() ? r.x_T.slice(0, off, off + nb).to(at::kFloat) : at::randn(model.batch_shape(nb), gen);
    at::Tensor from = r.edit_from.defined() ? r.edit_from.slice(0, off, off + nb).to(at::kFloat) : at::Tensor();
    if (sdedit) {
      // x_T drawn above is the noise of q_sample: the same seed gives the same noise at every strength.
      auto full = model.diffusion.make();
      x_T = full.q_sample(from, at::full({nb}, t0, at::TensorOptions().dtype(at::kLong)), x_T);
    }
    if (cb.cancel && cb.cancel->load()) throw Cancelled("cancelled");
    if (r.inpaint_mask.defined()) {
      const auto& m = r.inpaint_mask;
      auto mask = (m.size(0) == 1 ? m : m.slice(0, off, off + nb)).to(at::kFloat);
      parts.push_back(repaint_sample(process, denoiser, from, mask, x_T, gen, r.repaint, o));
    } else {
      parts.push_back(run_sampler(r.sampler, process, denoiser, x_T, gen, o));
    }
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

std::string sample_command(const std::string& model_path, const GenerationRequest& r, int threads,
                           const std::string& png_dir) {
  const bool inpaint = r.inpaint_mask.defined(), edit = r.edit_from.defined() && !inpaint;
  std::string c = "ddpm --threads " + std::to_string(threads) + (inpaint ? " inpaint" : edit ? " edit" : " sample") +
                  " -m " + shell_word(model_path);
  if (!inpaint) c += " --sampler " + shell_word(r.sampler.name);
  if (r.sampler.steps) c += " --steps " + std::to_string(*r.sampler.steps);
  if (!inpaint && !r.sampler.spacing.empty()) c += " --spacing " + shell_word(r.sampler.spacing);
  if (r.sampler.name == "ddim") c += " --eta " + number(r.sampler.eta);
  if (r.sampler.name == "dpm++" && r.sampler.order != 2) c += " --order " + std::to_string(r.sampler.order);
  if (r.sampler.name == "langevin") {
    c += " --langevin-steps " + std::to_string(r.sampler.langevin.steps_per_level) + " --langevin-scale " +
         number(r.sampler.langevin.step_scale);
  }
  if (edit || inpaint) {
    std::string files;
    for (int64_t i = 0; i < r.edit_from.size(0); ++i) files += (i ? "," : "") + r.image_spec;
    c += " --images " + shell_word(files);
  }
  if (edit) c += " --strength " + number(r.strength);
  if (inpaint) {
    c += " " + r.mask_spec + " --jump " + std::to_string(r.repaint.jump) + " --resample " + std::to_string(r.repaint.resample);
  }
  if (r.per_class) c += " --per-class";
  if (r.klass) c += " --class " + std::to_string(*r.klass);
  if (r.guidance != 0.0) c += " --guidance " + number(r.guidance);
  if (r.classifier) c += " --classifier " + shell_word(r.classifier_spec) + " --classifier-scale " + number(r.classifier_scale);
  if (!edit && !inpaint) {
    if (r.clip) c += *r.clip ? " --clip" : " --no-clip";
    c += " -n " + std::to_string(r.num);
  }
  if (!edit && !inpaint && r.batch != kDefaultBatch) c += " --batch " + std::to_string(r.batch);
  c += " --seed " + std::to_string(r.seed) + " --png-dir " + shell_word(png_dir);
  return c;
}

}  // namespace ddpm

// ddpm edit: image-to-image (SDEdit): real images noised to strength·T and denoised by any sampler, with a class,
// classifier-free guidance or a classifier.
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/serve/generation.h"
#include "ddpm/store/model.h"

namespace ddpm::cli {
namespace {

struct EditArgs {
  std::string model, images, data = "fashion-mnist:test", index, out = "edit.png", png_dir;
  SamplerSpec sampler;
  double strength = 0.6, guidance = 0.0, classifier_scale = 1.0;
  std::string classifier;
  std::vector<double> sweep;
  std::optional<int64_t> klass;
  int64_t num = 8;
  uint64_t seed = 0;
  DiffusionFlags diffusion;
};

void run_edit(EditArgs& a) {
  a.sampler.validate();
  check_writable(a.out);
  auto h = open_cli_model(a.model, a.diffusion);
  auto in = load_input_images(h, a.images, a.data, a.index, a.num);
  std::vector<double> strengths = a.sweep.empty() ? std::vector<double>{a.strength} : a.sweep;
  GenerationRequest req;
  req.sampler = a.sampler;
  req.klass = a.klass;
  req.guidance = a.guidance;
  req.seed = a.seed;
  req.edit_from = in.x;
  if (a.guidance != 0.0 && !a.klass) throw InvalidArgument("--guidance needs --class K");
  attach_classifier(req, a.classifier, a.classifier_scale, h);
  int64_t total = 0;
  for (double s : strengths) {
    req.strength = s;
    validate_generation(h, req);
    total += static_cast<int64_t>(std::ceil(s * static_cast<double>(a.sampler.steps_for(h.diffusion)))) + 1;
  }
  Progress bar("edit " + a.sampler.name, total);
  int64_t done = 0;
  std::vector<at::Tensor> rows = {in.x};
  for (double s : strengths) {
    req.strength = s;
    GenerationCallbacks cb;
    int64_t here = 0;
    cb.progress = [&](int64_t k, int64_t) { bar.update(done + (here = k)); };
    rows.push_back(generate(h, req, cb));
    done += here;
  }
  bar.finish();
  auto edited = rows.back();
  if (!a.png_dir.empty()) {
    ensure_directory(a.png_dir);
    save_images(a.png_dir + "/edit_", in.crop(edited));
  }
  // One row of inputs, then one row per strength.
  if (!a.out.empty()) save_grid(a.out, in.crop(at::cat(rows)), in.size());
  if (!global_options().quiet) {
    std::cerr << "edited " << in.size() << " images at strength";
    for (double s : strengths) std::cerr << " " << s;
    if (!a.out.empty()) std::cerr << " → " << a.out << " (first row: the inputs)";
    std::cerr << "\n";
  }
}

}  // namespace

void register_edit(CLI::App& app) {
  auto a = std::make_shared<EditArgs>();
  auto* c = app.add_subcommand("edit", "image-to-image (SDEdit): noise real images to strength·T, then denoise them");
  c->add_option("--model,-m", a->model, "an image model (checkpoint, TorchScript, diffusers:DIR, improved:FILE)")->required();
  a->diffusion.add(c, false);
  a->sampler.name = "ddim";
  add_sampler_flags(c, a->sampler);
  c->add_option("--steps", a->sampler.steps, "sampling steps of the whole process; an edit runs strength × of them");
  c->add_option("--strength", a->strength, "0 returns the input, 1 is plain sampling")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  c->add_option("--sweep", a->sweep, "several strengths, one row each (e.g. --sweep 0.2 0.4 0.6 0.8)")->check(CLI::Range(0.0, 1.0));
  add_input_image_flags(c, a->images, a->data, a->index, a->num);
  c->add_option("--class", a->klass, "denoise towards this class");
  c->add_option("--guidance,-w", a->guidance, "classifier-free guidance weight w (needs --class)")->capture_default_str();
  c->add_option("--classifier", a->classifier, "denoise towards --class with classifier guidance: a file of `ddpm classifier train --noisy`");
  c->add_option("--classifier-scale", a->classifier_scale, "classifier guidance scale s")->capture_default_str();
  c->add_option("--seed", a->seed, "seed of the added noise and the sampler's")->capture_default_str();
  c->add_option("--out,-o", a->out, "PNG grid: the inputs, then the edits")->capture_default_str();
  c->add_option("--png-dir", a->png_dir, "also write each edited image as its own PNG into this folder");
  c->callback([a] { run_edit(*a); });
}

}  // namespace ddpm::cli

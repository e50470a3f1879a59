// ddpm inpaint: fill in the masked part of real images with RePaint (plain replacement at --resample 1).
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/serve/generation.h"
#include "ddpm/store/model.h"

namespace ddpm::cli {
namespace {

struct InpaintArgs {
  std::string model, images, data = "fashion-mnist:test", index, mask, region = "right", out = "inpaint.png", png_dir;
  int64_t steps = 0, num = 8;  // steps 0: min(250, T)
  RepaintOptions repaint{10, 10};
  std::optional<int64_t> klass;
  double guidance = 0.0, classifier_scale = 1.0;
  std::string classifier;
  uint64_t seed = 0;
  DiffusionFlags diffusion;
};

/// 1 = keep, 0 = fill in, [1, 1, H, W] over the unpadded image (the padding is always kept).
at::Tensor make_mask(const InpaintArgs& a, int64_t H, int64_t W) {
  if (!a.mask.empty()) return mask_from_image(read_image_files({a.mask}), H, W, "'" + a.mask + "'");
  return region_mask(a.region, H, W);
}

void run_inpaint(InpaintArgs& a) {
  check_writable(a.out);
  auto h = open_cli_model(a.model, a.diffusion);
  auto in = load_input_images(h, a.images, a.data, a.index, a.num);
  const int64_t H = in.x.size(2) - 2 * in.pad_h, W = in.x.size(3) - 2 * in.pad_w;
  auto mask = in.pad_mask(make_mask(a, H, W));
  if (a.steps == 0) a.steps = std::min<int64_t>(250, h.diffusion.timesteps);
  if (a.steps < 1 || a.steps > h.diffusion.timesteps)
    throw InvalidArgument("--steps must be 1.." + std::to_string(h.diffusion.timesteps));
  if (a.guidance != 0.0 && !a.klass) throw InvalidArgument("--guidance needs --class K");
  GenerationRequest req;
  req.sampler.name = "ddpm";
  req.sampler.steps = a.steps;
  req.klass = a.klass;
  req.guidance = a.guidance;
  req.seed = a.seed;
  req.clip = true;
  req.edit_from = in.x;
  req.inpaint_mask = mask;
  req.repaint = a.repaint;
  attach_classifier(req, a.classifier, a.classifier_scale, h);
  validate_generation(h, req);
  Progress bar("inpaint (RePaint j " + std::to_string(a.repaint.jump) + ", r " + std::to_string(a.repaint.resample) + ")",
               req.calls(h.diffusion));
  GenerationCallbacks cb;
  cb.progress = [&](int64_t k, int64_t) { bar.update(k); };
  auto x = generate(h, req, cb);
  bar.finish();
  // Rows: the inputs, what the model saw (the hidden part grey), the result.
  auto shown = in.x * mask + (1 - mask) * 0.0;
  if (!a.png_dir.empty()) {
    ensure_directory(a.png_dir);
    save_images(a.png_dir + "/inpaint_", in.crop(x));
  }
  save_grid(a.out, in.crop(at::cat({in.x, shown, x})), in.size());
  if (!global_options().quiet) std::cerr << "filled in " << in.size() << " images → " << a.out << " (rows: input, known part, result)\n";
}

}  // namespace

void register_inpaint(CLI::App& app) {
  auto a = std::make_shared<InpaintArgs>();
  auto* c = app.add_subcommand("inpaint", "fill in the masked part of real images (RePaint; --resample 1 = plain replacement)");
  c->add_option("--model,-m", a->model, "an image model (checkpoint, TorchScript, diffusers:DIR, improved:FILE)")->required();
  a->diffusion.add(c, false);
  c->add_option("--mask", a->mask, "PNG of the images' size: white = keep, black = fill in");
  c->add_option("--region", a->region, "without --mask, the part to fill in: right, left, top, bottom, centre")->capture_default_str();
  c->add_option("--steps", a->steps, "DDPM steps (respaced) [250, or T if smaller]");
  c->add_option("--jump", a->repaint.jump, "RePaint jump length j")->capture_default_str();
  c->add_option("--resample", a->repaint.resample, "RePaint resamplings r (1 = plain replacement)")->capture_default_str();
  add_input_image_flags(c, a->images, a->data, a->index, a->num);
  c->add_option("--class", a->klass, "fill in towards this class");
  c->add_option("--guidance,-w", a->guidance, "classifier-free guidance weight w (needs --class)")->capture_default_str();
  c->add_option("--classifier", a->classifier, "fill in towards --class with classifier guidance: a file of `ddpm classifier train --noisy`");
  c->add_option("--classifier-scale", a->classifier_scale, "classifier guidance scale s")->capture_default_str();
  c->add_option("--seed", a->seed, "seed of the sampler's noise")->capture_default_str();
  c->add_option("--out,-o", a->out, "PNG grid: inputs, known parts, results")->capture_default_str();
  c->add_option("--png-dir", a->png_dir, "also write each result as its own PNG into this folder");
  c->callback([a] { run_inpaint(*a); });
}

}  // namespace ddpm::cli

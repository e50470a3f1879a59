// One generation as a user asks for it — sampler, steps, class or every class, guidance, seed, count — run on an
// opened model. The CLI's `ddpm sample` and the server both run it, so the server's images are `ddpm sample`'s,
// byte for byte, and every job can name the command line that repeats it.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "ddpm/guidance.h"
#include "ddpm/samplers.h"
#include "ddpm/sampler_registry.h"
#include "ddpm/store/model.h"

namespace ddpm {

/// `ddpm sample`'s batch size, which the server uses too (so that its jobs are the command line's, byte for byte).
constexpr int64_t kDefaultBatch = 250;

struct GenerationRequest {
  SamplerSpec sampler;
  double guidance = 0.0;          ///< classifier-free guidance weight w (needs a class or per_class)
  std::optional<int64_t> klass;   ///< every item of this class
  bool per_class = false;         ///< `num` items of every class, class by class
  int64_t num = 1;                ///< items (per class with per_class)
  uint64_t seed = 0;              ///< of x_T and the sampler's noise
  std::optional<bool> clip;       ///< clip x̂0 to [-1, 1]; unset = images only (SPEC §2)
  at::Tensor x_T;                 ///< start here instead of drawing x_T (its count replaces num)
  /// Image-to-image (SDEdit, Meng et al. 2022): start from these items [N, item_shape...] noised to
  /// t0 = strength·T with q_sample, and run the sampler over its steps up to t0. strength 0 returns them unchanged;
  /// strength 1 is plain sampling from x_T ~ N(0, I).
  at::Tensor edit_from;
  double strength = 1.0;
  /// Inpainting (RePaint, Lugmayr et al. 2022): with a mask, edit_from holds the known images and the sampler must
  /// be "ddpm" (RePaint runs DDPM's reverse steps, respaced to sampler.steps); strength stays 1. The mask is 1 where
  /// edit_from is kept and 0 where it is generated, [1 or N, 1, H, W] (it broadcasts over channels).
  at::Tensor inpaint_mask;
  RepaintOptions repaint{10, 10};
  /// As a command line names the images to edit and the mask (sample_command): files, or "--region NAME".
  std::string image_spec = "input.png", mask_spec = "--mask mask.png";
  /// Classifier guidance (Dhariwal & Nichol) towards klass or every class: DDPM shifts its mean (Algorithm 1), the
  /// other samplers guide the score (Algorithm 2). The model itself is called unconditionally (its null label).
  NoisyClassifier classifier;
  int64_t classifier_classes = 0;  ///< the classifier's K (classes are checked against it)
  double classifier_scale = 1.0;
  std::string classifier_spec;     ///< as the command line names it (--classifier)
  /// At most this many items go through the network at once (0 = all of them; `ddpm sample --batch`). Batches run one after another on
  /// one random generator, so a run's first batch is exactly the run of that many items alone, and the result
  /// depends on the seed and on this batch size.
  int64_t batch = kDefaultBatch;

  /// Items generated: num, times the classes with per_class (or x_T's count).
  int64_t count(const Model& model) const;
  /// Network calls of the run (a guided call counts once): the sampler's, RePaint's resamplings included.
  int64_t calls(const DiffusionConfig& diffusion) const;
  /// Items per batch: batch, or count(model) when that is smaller or batch is 0.
  int64_t batch_size(const Model& model) const;
  /// Bytes the run needs, estimated: every item's x_T and result, and one batch's network activations
  /// (Network::memory_per_item) and sampler tensors. generate() refuses a run above available_memory().
  uint64_t memory(const Model& model) const;
};

struct GenerationCallbacks {
  /// After every step: step (1-based), steps, the original timestep t of that step, the new point x and x̂0.
  std::function<void(int64_t step, int64_t steps, int64_t t, const at::Tensor& x, const at::Tensor& pred_x0)> on_step;
  /// Network calls done of total (guidance's paired call counts once).
  ProgressFn progress;
  /// Checked before every network call; when set, the run throws Cancelled within one network evaluation.
  const std::atomic<bool>* cancel = nullptr;
};

/// Checks the request against the model (class range, guidance needs classes, sampler settings), throwing
/// InvalidArgument with the field at fault ("class", "guidance", "num", "steps", "eta", ...).
void validate_generation(const Model& model, const GenerationRequest& request);

/// validate_generation, then runs the sampler batch by batch; returns [count, item_shape...]. Throws OutOfMemory
/// (field "batch", or "num" for batches of one) when request.memory(model) exceeds the memory available.
at::Tensor generate(const Model& model, const GenerationRequest& request, const GenerationCallbacks& callbacks = {});

/// The denoiser the request's guidance asks for: the model's own, classifier-free guided (guidance w), or — with a
/// classifier — the model at its null label guided by the classifier's gradient: through the score for DDIM and
/// DPM-Solver++ (Algorithm 2), or, for "ddpm", plain with the mean shift of Algorithm 1 set in `opts.mean_guidance`.
/// The labels in SampleOptions::y are then the classes to guide towards. generate() uses it; `ddpm fid` too.
Denoiser request_denoiser(const Model& model, const GenerationRequest& request, SampleOptions& opts);

/// The `ddpm sample` command line (`ddpm edit` for an edit, `ddpm inpaint` with a mask) that generates the same
/// items from `model_path` and writes them as PNGs into `png_dir`. `threads` is part of it: results are reproducible
/// at a fixed thread count. Edits name their images by image_spec (repeated for each item) and mask_spec.
std::string sample_command(const std::string& model_path, const GenerationRequest& request, int threads,
                           const std::string& png_dir = "out");

}  // namespace ddpm

// Samples a model with a chosen sampler into a PNG grid: the library alone, as `ddpm sample --plot` does it.
//   sample_grid MODEL OUT.png [SAMPLER [STEPS [N]]]     e.g. sample_grid models/fashion-mnist.safetensors grid.png ddim 50 8
#include <ATen/Parallel.h>

#include <cmath>
#include <iostream>
#include <string>

#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/sampler_registry.h"
#include "ddpm/store/model.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: sample_grid MODEL OUT.png [SAMPLER [STEPS [N per class]]]\nsamplers:";
    for (const auto& s : ddpm::sampler_registry()) std::cerr << "\n  " << s.name << ": " << s.help;
    std::cerr << "\n";
    return 2;
  }
  try {
    at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
    ddpm::Model model = ddpm::open_model(argv[1]);
    if (!model.is_image()) throw ddpm::InvalidArgument(std::string(argv[1]) + " is not an image model");

    ddpm::SamplerSpec sampler;
    sampler.name = argc > 3 ? argv[3] : "ddim";
    if (argc > 4) sampler.steps = std::stoll(argv[4]);
    const int64_t per_row = argc > 5 ? std::stoll(argv[5]) : 8;

    // One row per class for a class-conditional model, else a square of per_row × per_row samples.
    const int64_t rows = model.num_classes > 0 ? model.num_classes : per_row;
    ddpm::SampleOptions opts;
    opts.clip_denoised = true;
    if (model.num_classes > 0)
      opts.y = at::arange(model.num_classes, at::TensorOptions().dtype(at::kLong)).repeat_interleave(per_row);
    opts.progress = [](int64_t done, int64_t total) { std::cerr << "\rstep " << done << "/" << total << std::flush; };

    auto gen = ddpm::compat::make_cpu_generator(0);
    auto x_T = at::randn(model.batch_shape(rows * per_row), gen);
    auto x = ddpm::sample(sampler, model.diffusion, model.denoiser, x_T, gen, opts);
    ddpm::save_image_grid(argv[2], x, per_row, 3);
    std::cerr << "\n" << x.size(0) << " samples (" << sampler.name << ", " << sampler.steps_for(model.diffusion)
              << " steps) → " << argv[2] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "sample_grid: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

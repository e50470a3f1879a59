// ddpm import: published models (diffusers pipelines, improved-diffusion .pt) as checkpoints of this project.
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/store/import.h"

namespace ddpm::cli {
namespace {

void report(const ImportedModel& m, const std::string& out) {
  if (global_options().quiet) return;
  std::cerr << "wrote " << out << ": " << m.network->num_parameters() << " parameters, diffusion "
            << nlohmann::json(m.diffusion).dump().substr(0, 160) << "\n";
  for (const auto& n : m.source["notes"]) std::cerr << "note: " << n.get<std::string>() << "\n";
  if (m.source.contains("clip_sample") && !m.source["clip_sample"].get<bool>())
    std::cerr << "note: the source samples without clipping x̂0; pass --no-clip to `ddpm sample` to match it\n";
}

}  // namespace

void register_import(CLI::App& app) {
  auto* c = app.add_subcommand("import",
                               "convert a published model into a checkpoint of this project (then sample, nll, fid, "
                               "export, serve work on it)");
  c->require_subcommand(1);
  auto dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto* d = c->add_subcommand("diffusers",
                              "a diffusers UNet2DModel: a pipeline folder (model_index.json, unet/, scheduler/), a flat "
                              "hub folder such as google/ddpm-cifar10-32, a bare unet/ folder or a Hugging Face cache "
                              "entry (~/.cache/huggingface/hub/models--ORG--NAME)");
  d->add_option("dir", *dir, "the model's folder")->required();
  d->add_option("--out,-o", *out, "CHECKPOINT.safetensors to write")->required();
  d->callback([dir, out] {
    check_writable(*out);
    auto m = import_diffusers(*dir);
    save_imported(m, *out, command_line());
    report(m, *out);
  });
  auto file = std::make_shared<std::string>();
  auto flags = std::make_shared<std::string>();
  auto out2 = std::make_shared<std::string>();
  auto* i = c->add_subcommand("improved",
                              "an openai/improved-diffusion checkpoint (ema_0.9999_NNN.pt or modelNNN.pt) with the flags "
                              "it was trained with");
  i->add_option("file", *file, "the .pt file")->required();
  i->add_option("--flags", *flags,
                "MODEL_FLAGS and DIFFUSION_FLAGS as improved-diffusion's README prints them, e.g. \"--image_size 32 "
                "--num_channels 128 --num_res_blocks 3 --learn_sigma True --diffusion_steps 4000 --noise_schedule "
                "cosine\"; flags not given take improved-diffusion's defaults");
  i->add_option("--out,-o", *out2, "CHECKPOINT.safetensors to write")->required();
  i->callback([file, flags, out2] {
    check_writable(*out2);
    auto m = import_improved(*file, *flags);
    save_imported(m, *out2, command_line());
    report(m, *out2);
  });
}

}  // namespace ddpm::cli

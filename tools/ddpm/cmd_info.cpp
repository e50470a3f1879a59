// ddpm info: the model card of a checkpoint.
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/io/checkpoint.h"

namespace ddpm::cli {

void register_info(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("info", "show a checkpoint's configuration, size, data and training command");
  c->add_option("checkpoint", *path, "CHECKPOINT.safetensors")->required();
  c->add_flag("--json", *json, "print the metadata as JSON");
  auto strip = std::make_shared<std::string>();
  c->add_option("--strip", *strip, "write a copy holding only the EMA weights and the model card (a shippable model)");
  c->callback([path, json, strip] {
    auto m = load_model(*path);
    if (!strip->empty()) {
      save_model_only(*path, *strip);
      if (!global_options().quiet) std::cerr << "wrote " << *strip << " (EMA weights and model card)\n";
    }
    nlohmann::json card = m.meta;
    card["parameters"] = m.network->num_parameters();
    if (*json) {
      std::cout << card.dump() << "\n";
      return;
    }
    std::cout << "checkpoint  " << *path << "\n"
              << "network     " << m.meta["network"].dump() << "\n"
              << "parameters  " << m.network->num_parameters() << "\n"
              << "diffusion   " << m.meta["diffusion"].dump() << "\n"
              << "training    " << m.meta.value("train", nlohmann::json()).dump() << "\n"
              << "step        " << m.meta["step"].dump() << "\n"
              << "data        " << m.meta.value("data", nlohmann::json()).dump() << "\n"
              << "command     " << m.meta.value("command", nlohmann::json("")).get<std::string>() << "\n";
  });
}

}  // namespace ddpm::cli

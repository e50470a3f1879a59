// ddpm info: the model card of a checkpoint.
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/models/torchscript.h"

namespace ddpm::cli {

void register_info(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("info", "show a checkpoint's configuration, size, data and training command");
  c->add_option("checkpoint", *path, "CHECKPOINT.safetensors")->required();
  c->add_flag("--json", *json, "print the metadata as JSON");
  auto strip = std::make_shared<std::string>();
  c->add_option("--strip", *strip, "write a copy holding only the EMA weights and the model card (a shippable model)");
  auto raw = std::make_shared<bool>(false);
  c->add_flag("--raw", *raw, "with --strip: the raw (non-EMA) weights of a training checkpoint instead");
  c->callback([path, json, strip, raw] {
    auto m = load_model(*path);
    if (*raw && strip->empty()) throw InvalidArgument("--raw needs --strip OUT");
    if (!strip->empty()) {
      save_model_only(*path, *strip, *raw);
      if (!global_options().quiet)
        std::cerr << "wrote " << *strip << " (" << (*raw ? "raw" : "EMA") << " weights and model card)\n";
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
    if (m.meta.contains("imported")) {
      const auto& s = m.meta["imported"];
      std::cout << "imported    " << s.value("format", "") << " " << s.value("path", "") << " (weights "
                << s.value("weights", "") << ")\n";
      if (s.contains("flags")) std::cout << "flags       " << s["flags"].get<std::string>() << "\n";
      for (const auto& n : s.value("notes", nlohmann::json::array())) std::cout << "note        " << n.get<std::string>() << "\n";
    }
  });
}

void register_export(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto raw = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("export",
                               "write a checkpoint's network as TorchScript for Python (torch.jit.load), with a JSON "
                               "sidecar of its diffusion settings");
  c->add_option("checkpoint", *path, "CHECKPOINT.safetensors")->required();
  c->add_option("--out,-o", *out, "MODEL.pt (the sidecar is written beside it as MODEL.json)")->required();
  c->add_flag("--raw", *raw, "export the raw weights instead of the EMA weights");
  c->callback([path, out, raw] {
    if (!is_torchscript_spec(*out)) throw InvalidArgument("--out must end in .pt, .pth or .ts (got '" + *out + "')");
    check_writable(*out);
    auto m = load_model(*path, !*raw);
    export_torchscript(*m.network, *out);
    nlohmann::json side = m.diffusion;
    side["item_shape"] = m.network->item_shape();
    side["num_classes"] = m.network->num_classes();
    side["null_label"] = m.network->num_classes();
    side["source"] = *path;
    side["weights"] = *raw ? "raw" : "ema";
    side["signature"] = m.network->num_classes() > 0 ? "forward(x, t, y)" : "forward(x, t)";
    write_file_atomic(torchscript_sidecar(*out), side.dump(2) + "\n");
    if (!global_options().quiet)
      std::cerr << "wrote " << *out << " (" << side["signature"].get<std::string>() << "; t = timestep indices 0..T-1, "
                << "int64) and " << torchscript_sidecar(*out) << "\n";
  });
}

}  // namespace ddpm::cli

// ddpm info: the model card of a checkpoint.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/io/safetensors.h"
#include "ddpm/models/classifier.h"
#include "ddpm/models/noisy_classifier.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/store/classifier.h"
#include "ddpm/models/torchscript.h"

namespace ddpm::cli {
namespace {

int64_t parameter_count(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

/// The card of a classifier file (`ddpm classifier train`, with or without --noisy); false when `path` is neither.
bool print_classifier_card(const std::string& path, bool json, bool strip) {
  // The network entry of the metadata names the kind; a damaged file of a known kind reports its own fault.
  std::string type;
  {
    const auto st = load_safetensors(path);
    const auto it = st.metadata.find("network");
    if (it == st.metadata.end()) return false;
    const auto net = nlohmann::json::parse(it->second, nullptr, false);
    if (!net.is_object() || !net.contains("type") || !net["type"].is_string()) return false;
    type = net["type"].get<std::string>();
  }
  nlohmann::json card;
  std::string kind;
  if (type == "noisy_classifier") {
    auto c = load_noisy_classifier(path);
    card = c.meta;
    card["parameters"] = parameter_count(*c.net);
    kind = "noise-aware classifier p(y | x_t, t), for classifier guidance";
  } else if (type == "classifier") {
    nlohmann::json meta;
    auto c = load_classifier(path, &meta);
    card = meta;
    card["parameters"] = parameter_count(*c);
    kind = "classifier p(y | x), the feature network of FID and IS";
  } else {
    return false;
  }
  if (strip) throw InvalidArgument("--strip applies to model checkpoints; '" + path + "' is a classifier");
  card["kind"] = kind;
  if (json) {
    std::cout << card.dump() << "\n";
    return true;
  }
  std::cout << "classifier  " << path << "\n"
            << "kind        " << kind << "\n"
            << "network     " << card.value("network", nlohmann::json()).dump() << "\n"
            << "parameters  " << card["parameters"].dump() << "\n";
  if (card.contains("diffusion")) std::cout << "diffusion   " << card["diffusion"].dump() << "\n";
  std::cout << "training    " << card.value("train", nlohmann::json()).dump() << "\n"
            << "data        " << card.value("data", nlohmann::json()).dump() << "\n";
  char line[96];
  if (card.contains("test_accuracy") && card["test_accuracy"].is_number()) {
    std::snprintf(line, sizeof line, "%.4f", card["test_accuracy"].get<double>());
    std::cout << "accuracy    " << line << " on " << card.value("test", nlohmann::json()).dump()
              << (card.contains("accuracy_by_band") ? " (t uniform)" : "") << "\n";
  }
  for (const auto& b : card.value("accuracy_by_band", nlohmann::json::array())) {
    if (!b.is_object()) continue;
    std::snprintf(line, sizeof line, "  t %4lld-%-4lld %.4f", static_cast<long long>(b.value("t_begin", int64_t{0})),
                  static_cast<long long>(b.value("t_end", int64_t{0}) - 1), b.value("accuracy", 0.0));
    std::cout << line << "\n";
  }
  std::cout << "command     " << card.value("command", nlohmann::json("")).get<std::string>() << "\n";
  return true;
}

}  // namespace

void register_info(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("info", "show a checkpoint's (or a classifier's) configuration, size, data and training command");
  c->add_option("checkpoint", *path, "CHECKPOINT.safetensors, or a classifier from ddpm classifier train")->required();
  c->add_flag("--json", *json, "print the metadata as JSON");
  auto strip = std::make_shared<std::string>();
  c->add_option("--strip", *strip, "write a copy holding only the EMA weights and the model card (a shippable model)");
  auto raw = std::make_shared<bool>(false);
  c->add_flag("--raw", *raw, "with --strip: the raw (non-EMA) weights of a training checkpoint instead");
  c->callback([path, json, strip, raw] {
    LoadedModel m;
    try {
      m = load_model(*path);
    } catch (const FormatError&) {
      if (print_classifier_card(*path, *json, !strip->empty())) return;
      throw;
    }
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

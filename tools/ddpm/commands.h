#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace ddpm::cli {

/// Each registers its subcommand; the callback runs it.
void register_train(CLI::App& app);
void register_sample(CLI::App& app);
void register_nll(CLI::App& app);
void register_schedule(CLI::App& app);
void register_info(CLI::App& app);
void register_export(CLI::App& app);
void register_classifier(CLI::App& app);
void register_quality(CLI::App& app);
void register_generate(CLI::App& app);
void register_latents(CLI::App& app);
void register_launch(CLI::App& app);
void register_import(CLI::App& app);
void register_serve(CLI::App& app);
void register_edit(CLI::App& app);
void register_inpaint(CLI::App& app);
void register_plot(CLI::App& app);

/// The command line as the user typed it (stored in checkpoints).
std::string& command_line();

}  // namespace ddpm::cli

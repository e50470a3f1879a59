// ddpm: the command-line tool. Parses, renders progress and errors; all the work is in the library.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "commands.h"
#include "common.h"
#include "ddpm/compat.h"
#include "ddpm/errors.h"

namespace ddpm::cli {
std::string& command_line() {
  static std::string s;
  return s;
}
}  // namespace ddpm::cli

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

/// In a data-parallel job every rank may report an error; all but rank 0 say which they are.
std::string error_prefix() {
  const char* r = std::getenv("RANK");
  const char* w = std::getenv("WORLD_SIZE");
  if (r == nullptr || w == nullptr || std::string(w) == "1" || std::string(r) == "0") return "ddpm: error: ";
  return "ddpm: error: [rank " + std::string(r) + "] ";
}

/// Processes started together on one machine (LOCAL_WORLD_SIZE, as torchrun and ddpm launch set it) share its cores.
int default_threads() {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const char* l = std::getenv("LOCAL_WORLD_SIZE");
  const int local = l != nullptr ? std::atoi(l) : 1;
  return std::max(1, local > 1 ? cores / local : cores);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ddpm::cli;
  ddpm::compat::quiet_torch_logging();
  for (int i = 0; i < argc; ++i) command_line() += (i ? " " : "") + std::string(argv[i]);
  command_line().replace(0, std::string(argv[0]).size(), "ddpm");

  CLI::App app{"ddpm: denoising diffusion probabilistic models in C++ (train, sample, evaluate)", "ddpm"};
  app.require_subcommand(1);
  app.fallthrough();  // --threads and --quiet work before or after the subcommand
  auto& g = global_options();
  app.add_option("--threads", g.threads, "CPU threads (default: all cores, shared among LOCAL_WORLD_SIZE processes)")->check(CLI::NonNegativeNumber);
  app.add_flag("--quiet,-q", g.quiet, "no progress display");
  app.add_option("--zoom", g.zoom, "image grids: screen pixels per image pixel (0 = automatic: 3 for images up to 32 px, 2 up to 64, else 1)")->check(CLI::Range(0, 16))->capture_default_str();
  app.add_option("--attention-precision", g.attention,
                 "precision of a saved model's attention products: fp32 (exact) or bf16 (bfloat16, several times faster "
                 "on CPUs with AMX/AVX512-BF16; FID and bits/dim unchanged within noise, docs/PERFORMANCE.md)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  app.add_option("--precision", g.precision,
                 "arithmetic of the network in train, sample and evaluation: fp32 (exact) or bf16 (mixed precision: "
                 "bfloat16 convolutions and activations, float weights, statistics and output; about twice as fast "
                 "where the CPU has AVX512-BF16 or AMX, slower elsewhere; docs/PERFORMANCE.md), or auto (the faster of "
                 "the two for this network on this machine, by a timed forward pass at start-up)")
      ->check(CLI::IsMember({"fp32", "bf16", "auto"}))
      ->capture_default_str();
  app.set_version_flag("--version", "ddpm 0.1.0");
  register_train(app);
  register_sample(app);
  register_nll(app);
  register_schedule(app);
  register_generate(app);
  register_latents(app);
  register_info(app);
  register_export(app);
  register_import(app);
  register_serve(app);
  register_edit(app);
  register_inpaint(app);
  register_classifier(app);
  register_quality(app);
  register_launch(app);
  register_plot(app);
  app.parse_complete_callback([&] {
    // More threads than the machine has only thrash (--threads 100000 once started them all): clamp, and say so.
    const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (g.threads > hardware) {
      std::cerr << "ddpm: note: --threads " << g.threads << " is more than this machine's " << hardware
                << " hardware threads; using " << hardware << "\n";
      g.threads = hardware;
    }
    const int n = g.threads > 0 ? g.threads : default_threads();
    at::set_num_threads(n);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << error_prefix() << first_line(e.what()) << " (see ddpm --help)\n";
    return e.get_exit_code();
  } catch (const SilentExit& e) {
    return e.code;
  } catch (const ddpm::Error& e) {
    std::cerr << error_prefix() << first_line(render_error(e)) << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << error_prefix() << first_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << error_prefix() << first_line(e.what()) << "\n";
    return 1;
  }
  return 0;
}

// Helpers of the server's tests: a folder of tiny models trained by the CLI, a gated exact model, waiting.
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "ddpm/serve/catalog.h"
#include "ddpm/serve/jobs.h"
#include "support.h"

namespace ddpm::test {

namespace fs = std::filesystem;
using json = nlohmann::json;

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline int shell(const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()); }

/// A folder with two tiny U-Nets trained for 3 steps on Fashion-MNIST: "cond" (classes, label dropout) and
/// "uncond", a noisy classifier "guide" for both, plus files the catalog must leave out.
inline const std::string& models_dir() {
  static const std::string d = [] {
    auto p = fs::temp_directory_path() / ("ddpm_test_serve_" + std::to_string(::getpid()));
    fs::create_directories(p / "runs");
    const std::string net = " --data fashion-mnist --data-size 64 --steps 3 --batch 4 --sample-every 0 --channels 8"
                            " --channel-mult 1,2 --attention 16 --res-blocks 1 --groups 4 --timesteps 100 ";
    const std::string cli = std::string(DDPM_CLI) + " --threads 1 train -q" + net;
    EXPECT_EQ(shell(cli + "--conditional --label-dropout 0.1 --out " + (p / "runs/c").string()), 0);
    EXPECT_EQ(shell(cli + "--out " + (p / "runs/u").string()), 0);
    fs::copy_file(p / "runs/c/checkpoint.safetensors", p / "cond.safetensors");
    fs::copy_file(p / "runs/u/checkpoint.safetensors", p / "uncond.safetensors");
    // A noise-aware classifier of the same process (T = 100, 1×32×32) for classifier guidance: "guide".
    EXPECT_EQ(shell(std::string(DDPM_CLI) + " --threads 1 classifier train -q --noisy --like " + (p / "cond.safetensors").string() +
                    " --steps 3 --batch 4 --width 8 --channel-mult 1,2 --test '' -o " + (p / "guide.safetensors").string()),
              0);
    std::ofstream(p / "broken.safetensors") << "not a model";
    fs::copy_file(p / "runs/u/checkpoint.safetensors", p / "bad name!.safetensors");
    return p.string();
  }();
  return d;
}

inline std::shared_ptr<serve::Catalog> catalog() {
  static auto c = serve::Catalog::scan(models_dir());
  return c;
}

/// An exact 2-D model whose network calls wait while `gate` is closed and are counted.
struct Gated {
  std::atomic<bool> open{true};
  std::atomic<int> calls{0};
  std::shared_ptr<const Model> model() {
    auto m = std::make_shared<Model>(open_model("gmm:8gaussians"));
    auto inner = m->denoiser;
    m->denoiser = [this, inner](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
      while (!open) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ++calls;
      return inner(x, t, y);
    };
    return m;
  }
};

inline serve::JobSpec points_job(int64_t steps = 5) {
  serve::JobSpec s;
  s.model = "points";
  s.request.sampler.name = "ddim";
  s.request.sampler.steps = steps;
  s.request.num = 3;
  return s;
}

template <class F>
bool eventually(F f, int ms = 20000) {
  for (int i = 0; i < ms; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return f();
}

}  // namespace ddpm::test

// bench_unet: training and sampling throughput of the DDPM U-Net against this machine's convolution peak and against
// the same network and steps in PyTorch eager (bench/reference_unet.py), all timed in one run.
//
//   build/bench/bench_unet [--config fashion-mnist|cifar10-ddpm|all] [--iters N] [--threads N] [--json FILE]
//                          [--no-reference] [--scaling]
//                          fp32 and mixed bf16 (ComputePrecision) against PyTorch eager fp32 and under autocast bf16;
//                          the host (CPU, instruction sets, ATen capability, library versions) heads the table
//   build/bench/bench_unet --group-norm                     GroupNorm+SiLU: LibTorch's ops against the fused kernel
//   build/bench/bench_unet --film [--config C]              FiLM scale-shift ResBlocks against the fused default
//   build/bench/bench_unet --config C --profile TRACE.json [--bf16 | --train]
//                          LibTorch profiler trace of sampling forwards (or training steps);
//                          summarise with bench/profile_summary.py
//
// Every figure is a best-of-repeats wall time; the ratios compare runs made minutes apart on the same machine.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "ddpm/compat.h"
#include "ddpm/io/npy.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/samplers.h"
#include "ddpm/schedule.h"

using namespace ddpm::bench;

namespace {

nlohmann::json bench_config(const Config& c, int iters, int threads, bool reference) {
  nlohmann::json r = {{"config", c.name}, {"threads", threads}};
  const auto cost = ddpm::unet_cost(c.unet, c.unet.image_size);
  r["parameters"] = cost.parameters;
  r["forward_gflop_per_image"] = cost.total_flops() / 1e9;
  r["flop_share"] = {{"conv", cost.conv_flops / cost.total_flops()},
                     {"attention", cost.attention_flops / cost.total_flops()},
                     {"linear", cost.linear_flops / cost.total_flops()}};

  // The machine's peak: the model's three most expensive 3×3 convolution shapes at the sampling batch, both layouts.
  std::vector<ddpm::ConvShape> shapes;
  for (const auto& s : cost.convs)
    if (s.kernel == 3 && s.stride == 1 &&
        std::none_of(shapes.begin(), shapes.end(), [&](const ddpm::ConvShape& o) {
          return o.in_channels == s.in_channels && o.out_channels == s.out_channels && o.in_side == s.in_side;
        }))
      shapes.push_back(s);
  std::sort(shapes.begin(), shapes.end(), [](const auto& a, const auto& b) { return a.flops() > b.flops(); });
  shapes.resize(std::min<size_t>(3, shapes.size()));
  double peak = 0;
  nlohmann::json peaks = nlohmann::json::array();
  for (const auto& s : shapes)
    for (bool cl : {false, true}) {
      const double g = conv_gflops(s, c.batch_sample, cl, 5);
      peaks.push_back({{"shape", std::to_string(s.in_channels) + "->" + std::to_string(s.out_channels) + " @" +
                                     std::to_string(s.in_side)},
                       {"layout", cl ? "nhwc" : "nchw"},
                       {"gflops", g}});
      peak = std::max(peak, g);
    }
  std::cerr << "  conv peak " << peak << " GFLOP/s\n";
  r["conv_peak_gflops"] = peak;
  r["conv_peak_runs"] = peaks;
  // The same shapes in bfloat16, channels-last (the layout of the bf16 path).
  double peak_bf16 = 0;
  for (const auto& s : shapes) peak_bf16 = std::max(peak_bf16, conv_gflops(s, c.batch_sample, true, 5, at::kBFloat16));
  std::cerr << "  bf16 conv peak " << peak_bf16 << " GFLOP/s\n";
  r["conv_peak_bf16_gflops"] = peak_bf16;

  // Training step (forward, backward, clip, Adam, EMA) through the library's Trainer, fp32 and mixed bf16.
  for (auto compute : {ddpm::ComputePrecision::fp32, ddpm::ComputePrecision::bf16}) {
    const std::string suffix = compute == ddpm::ComputePrecision::bf16 ? "_bf16" : "";
    torch::manual_seed(0);
    const int64_t B = c.batch_train;
    auto net = std::make_shared<ddpm::UNet>(c.unet);
    net->set_compute_precision(compute);
    auto trainer = bench_trainer(net, B);
    trainer->step();  // warm-up
    double best = 1e30;  // best of two halves: the machine is shared
    for (int half = 0; half < 2; ++half) {
      auto t0 = Clock::now();
      for (int i = 0; i < (iters + 1) / 2; ++i) trainer->step();
      best = std::min(best, seconds_since(t0) / ((iters + 1) / 2));
    }
    const double img_s = B / best;
    r["train" + suffix + "_img_per_s"] = img_s;
    std::cerr << "  train" << suffix << " " << img_s << " img/s\n";
    r["train" + suffix + "_gflops"] = 3 * cost.total_flops() * img_s / 1e9;  // backward ≈ 2 × forward
  }

  // Sampling steps (network + DDIM update) under inference mode: fp32; fp32 with the attention products in bf16;
  // mixed bf16 (attention products in float); mixed bf16 with bf16 attention.
  struct Mode {
    const char* suffix;
    ddpm::ComputePrecision compute;
    ddpm::AttentionPrecision attention;
  };
  for (const Mode m : {Mode{"", ddpm::ComputePrecision::fp32, ddpm::AttentionPrecision::fp32},
                       Mode{"_bf16attn", ddpm::ComputePrecision::fp32, ddpm::AttentionPrecision::bf16},
                       Mode{"_bf16", ddpm::ComputePrecision::bf16, ddpm::AttentionPrecision::fp32},
                       Mode{"_bf16_bf16attn", ddpm::ComputePrecision::bf16, ddpm::AttentionPrecision::bf16}}) {
    const std::string suffix = m.suffix;
    torch::manual_seed(0);
    auto net = std::make_shared<ddpm::UNet>(c.unet);
    net->eval();
    net->set_attention_precision(m.attention);
    net->set_compute_precision(m.compute);
    const int64_t B = c.batch_sample, side = c.unet.image_size;
    ddpm::DiffusionConfig dc;
    auto diffusion = dc.respaced(iters + 1, "linspace");
    auto gen = ddpm::compat::make_cpu_generator(0);
    ddpm::SampleOptions so;
    if (c.unet.num_classes > 0) so.y = at::randint(0, c.unet.num_classes, {B}, at::TensorOptions().dtype(at::kLong));
    auto x = at::randn({B, c.unet.in_channels, side, side});
    ddpm::ddim_sample(dc.respaced(1, "linspace"), ddpm::as_denoiser(net), x, 0.0, gen,
                      so);  // warm-up
    auto t0 = Clock::now();
    ddpm::ddim_sample(diffusion, ddpm::as_denoiser(net), x, 0.0, gen, so);
    const double steps_s = (iters + 1) * B / seconds_since(t0);
    r["sample" + suffix + "_img_steps_per_s"] = steps_s;
    std::cerr << "  sample" << suffix << " " << steps_s << " image-steps/s\n";
    r["sample" + suffix + "_gflops"] = cost.total_flops() * steps_s / 1e9;
    r["sample" + suffix + "_fraction_of_peak"] =
        cost.total_flops() * steps_s / 1e9 / (m.compute == ddpm::ComputePrecision::bf16 ? peak_bf16 : peak);
  }

  // Peak memory of a training run of two steps, each precision in a fresh process of this program.
  {
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    for (const std::string p : {"fp32", "bf16"}) {
      const std::string out = run_capture(self + " --config " + c.name + " --threads " + std::to_string(threads) +
                                          " --precision " + p + " --point train,32," + std::to_string(c.batch_train) +
                                          ",2 2>/dev/null");
      if (out.find('{') != std::string::npos)
        r["train_peak_rss_mib" + std::string(p == "bf16" ? "_bf16" : "")] =
            nlohmann::json::parse(out.substr(out.find('{')))["peak_rss_mib"];
    }
  }

  if (reference) {
    const std::string args = " " DDPM_SOURCE_DIR "/bench/reference_unet.py --config " + c.name + " --batch-train " +
                             std::to_string(c.batch_train) + " --batch-sample " + std::to_string(c.batch_sample) +
                             " --iters " + std::to_string(iters) + " --threads " + std::to_string(threads) +
                             " 2>/dev/null";
    // The python3 on PATH (a pip torch), else Debian's (python3-torch). Eager fp32, then under
    // torch.autocast("cpu", dtype=torch.bfloat16).
    auto peer = [&](const std::string& extra) {
      std::string out = run_capture("python3" + args + extra);
      if (out.find('{') == std::string::npos) out = run_capture("/usr/bin/python3" + args + extra);
      return nlohmann::json::parse(out.substr(out.find('{')));
    };
    auto ratio = [&](const std::string& ours, const nlohmann::json& ref, const std::string& theirs) {
      return r[ours].get<double>() / ref.at(theirs).get<double>();
    };
    try {
      auto ref = peer("");
      r["pytorch"] = ref;
      if (ref.at("parameters") != r["parameters"]) r["pytorch_mismatch"] = "parameter counts differ";
      for (const std::string m : {"", "_bf16"}) r["train" + m + "_vs_pytorch"] = ratio("train" + m + "_img_per_s", ref, "train_img_per_s");
      for (const std::string m : {"", "_bf16attn", "_bf16", "_bf16_bf16attn"})
        r["sample" + m + "_vs_pytorch"] = ratio("sample" + m + "_img_steps_per_s", ref, "sample_img_steps_per_s");
      auto ac = peer(" --autocast");
      r["pytorch_autocast"] = ac;
      for (const std::string m : {"", "_bf16"}) r["train" + m + "_vs_autocast"] = ratio("train" + m + "_img_per_s", ac, "train_img_per_s");
      for (const std::string m : {"", "_bf16attn", "_bf16", "_bf16_bf16attn"})
        r["sample" + m + "_vs_autocast"] = ratio("sample" + m + "_img_steps_per_s", ac, "sample_img_steps_per_s");
    } catch (const std::exception&) {
      if (!r.contains("pytorch")) r["pytorch"] = "unavailable (python3 with torch is needed: bash scripts/setup.sh)";
    }
  }
  return r;
}

void print_table(const std::vector<nlohmann::json>& rows) {
  std::printf("%-14s %-15s %11s %8s %8s %15s %8s %8s %8s\n", "config", "precision", "train img/s", "vs torch",
              "vs autoc", "sample img-st/s", "of peak", "vs torch", "vs autoc");
  for (const auto& r : rows) {
    auto num = [&](const std::string& k) { return r.contains(k) && r[k].is_number() ? r[k].get<double>() : NAN; };
    struct Row {
      const char* name;
      std::string train, sample;
    };
    for (const Row& m : {Row{"fp32", "", ""}, Row{"fp32, bf16 attn", "-", "_bf16attn"}, Row{"bf16", "_bf16", "_bf16"},
                         Row{"bf16, bf16 attn", "-", "_bf16_bf16attn"}}) {
      const bool tr = m.train != "-";
      std::printf("%-14s %-15s %11.1f %7.2fx %7.2fx %15.1f %7.0f%% %7.2fx %7.2fx\n",
                  m.train.empty() ? r["config"].get<std::string>().c_str() : "", m.name,
                  tr ? num("train" + m.train + "_img_per_s") : NAN, tr ? num("train" + m.train + "_vs_pytorch") : NAN,
                  tr ? num("train" + m.train + "_vs_autocast") : NAN, num("sample" + m.sample + "_img_steps_per_s"),
                  100 * num("sample" + m.sample + "_fraction_of_peak"), num("sample" + m.sample + "_vs_pytorch"),
                  num("sample" + m.sample + "_vs_autocast"));
    }
    std::printf("%-14s conv peak %.0f GFLOP/s fp32, %.0f bf16; training peak memory %.0f MiB fp32, %.0f bf16\n", "",
                num("conv_peak_gflops"), num("conv_peak_bf16_gflops"), num("train_peak_rss_mib"),
                num("train_peak_rss_mib_bf16"));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "all", json_path;
  int iters = 5, threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool reference = true, scaling = false;
  std::string point, profile;
  bool bf16 = false, train = false;
  ddpm::ComputePrecision point_precision = ddpm::ComputePrecision::fp32;  // --precision, for --point
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "bench_unet: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") which = next();
    else if (a == "--iters") iters = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--json") json_path = next();
    else if (a == "--no-reference") reference = false;
    else if (a == "--scaling") scaling = true;
    else if (a == "--point") point = next();
    else if (a == "--group-norm") which = "group-norm";
    else if (a == "--film") profile = "film";
    else if (a == "--profile") profile = next();
    else if (a == "--bf16") bf16 = true;
    else if (a == "--train") train = true;
    else if (a == "--precision") point_precision = ddpm::parse_name<ddpm::ComputePrecision>(next());
    else {
      std::cerr << "usage: bench_unet [--config fashion-mnist|cifar10-ddpm|all] [--iters N] [--threads N] "
                   "[--json FILE] [--no-reference] [--scaling] [--group-norm] [--profile TRACE.json [--bf16 | --train]]\n";
      return a == "--help" ? 0 : 2;
    }
  }
  ddpm::compat::quiet_torch_logging();
  at::set_num_threads(threads);
  if (which == "group-norm") {
    bench_group_norm(iters);
    return 0;
  }
  if (profile == "film") {
    for (const auto& c : configs())
      if (which == "all" || c.name == which) bench_film(c, iters, c.batch_sample);
    return 0;
  }
  if (!profile.empty()) {
    for (const auto& c : configs())
      if (c.name == which) {
        if (train)
          profile_training(c, profile);
        else
          profile_sampling(c, profile, bf16 ? ddpm::AttentionPrecision::bf16 : ddpm::AttentionPrecision::fp32);
        return 0;
      }
    return 2;
  }
  if (!point.empty()) {
    for (const auto& c : configs())
      if (c.name == which) {
        std::cout << measure_point(c, point, point_precision).dump() << "\n";
        return 0;
      }
    return 2;
  }
  const auto host = host_info();
  std::vector<nlohmann::json> rows;
  try {
    for (const auto& c : configs()) {
      if (which != "all" && which != c.name) continue;
      std::cerr << "bench_unet: " << c.name << " ...\n";
      rows.push_back(bench_config(c, iters, threads, reference));
      rows.back()["host"] = host;
      if (scaling) {
        std::cerr << "bench_unet: scaling of " << c.name << " ...\n";
        rows.back()["scaling"] = bench_scaling(c, threads);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_unet: " << e.what() << "\n";
    return 1;
  }
  if (rows.empty()) {
    std::cerr << "bench_unet: unknown config '" << which << "'\n";
    return 2;
  }
  std::printf("host: %s, %d logical cores, %s; ATen %s; LibTorch %s, oneDNN %s; %s (%s); %d threads\n",
              host["cpu"].get<std::string>().c_str(), host["logical_cores"].get<int>(), host["isa"].dump().c_str(),
              host["aten_capability"].get<std::string>().c_str(), host["libtorch"].get<std::string>().c_str(),
              host["onednn"].get<std::string>().c_str(), host["openblas"].get<std::string>().c_str(),
              host.value("openblas_core", std::string("-")).c_str(), threads);
  print_table(rows);
  for (const auto& r : rows)
    if (r.contains("scaling")) print_scaling(r["scaling"]);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::cerr << "bench_unet: cannot write " << json_path << "\n";
      return 1;
    }
    std::fputs(nlohmann::json(rows).dump(2).c_str(), f);
    std::fclose(f);
  }
  return 0;
}

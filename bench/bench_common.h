// Shared by the benchmark programs of bench/: the configurations measured, the machine's description, the
// convolution peak, timing and memory helpers, and the library's Trainer on random data.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ddpm/models/unet.h"
#include "ddpm/models/unet_cost.h"
#include "ddpm/train/trainer.h"

namespace ddpm::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Config {
  std::string name;
  UNetOptions unet;
  int64_t batch_train, batch_sample;
};

/// fashion-mnist (the shipped model's network) and cifar10-ddpm (the DDPM paper's CIFAR-10 network).
std::vector<Config> configs();

/// Best GFLOP/s of one convolution shape over a few repeats, NCHW or channels_last.
double conv_gflops(const ConvShape& s, int64_t batch, bool channels_last, int repeats, at::ScalarType dtype = at::kFloat);

/// Standard output of a shell command ("" when it cannot start).
std::string run_capture(const std::string& cmd);

/// The machine and the software the figures come from: CPU model, cores, the instruction sets that matter here, the
/// ATen kernel capability in use, LibTorch / oneDNN / OpenBLAS versions.
nlohmann::json host_info();

/// The library's Trainer on `net` with random images in [-1, 1] (4 batches) and random labels for conditional nets:
/// the training step every measurement here times (forward, backward, clip, Adam, EMA).
std::unique_ptr<Trainer> bench_trainer(std::shared_ptr<UNet> net, int64_t batch);

/// Peak resident memory of this process (Linux VmHWM), MiB.
double peak_rss_mib();

// bench_parts.cpp: the measurements other than the main table.

/// GroupNorm+SiLU at the U-Net's activation shapes: LibTorch's two ops against the fused one, forward (inference)
/// and forward+backward, NCHW and channels_last; milliseconds, best of `reps`.
void bench_group_norm(int reps);
/// Chrome trace of two training steps (forward, backward, clip, Adam, EMA through Trainer) under LibTorch's profiler.
void profile_training(const Config& c, const std::string& path);
/// Chrome trace of three sampling forwards (batch of the config) under LibTorch's profiler; `precision` as given.
void profile_sampling(const Config& c, const std::string& path, AttentionPrecision precision);
/// One scaling point, measured in this (fresh) process so that its peak memory is its own: "sample,side,batch,steps"
/// or "train,side,batch,steps".
nlohmann::json measure_point(const Config& c, const std::string& spec, ComputePrecision precision);
/// Sampling time and peak memory against steps, batch and image size; training throughput against batch size.
/// Each point runs in a fresh process of this program.
nlohmann::json bench_scaling(const Config& c, int threads);
void print_scaling(const nlohmann::json& s);
/// The cost of FiLM (scale_shift_norm, improved-diffusion's ResBlocks; not fused) against the fused add-before-norm
/// block: the same network otherwise, forward passes interleaved, best of `iters`.
void bench_film(const Config& c, int iters, int64_t batch);

}  // namespace ddpm::bench

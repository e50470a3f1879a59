// Noise schedules (β_t) and respacing. Everything here is double precision (SPEC §1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ddpm/names.h"

namespace ddpm {

enum class BetaSchedule { linear, cosine, quadratic, sigmoid };
template <>
struct EnumNames<BetaSchedule> {
  static constexpr const char* what = "schedule";
  static constexpr std::pair<BetaSchedule, const char*> table[] = {{BetaSchedule::linear, "linear"},
                                                                   {BetaSchedule::cosine, "cosine"},
                                                                   {BetaSchedule::quadratic, "quadratic"},
                                                                   {BetaSchedule::sigmoid, "sigmoid"}};
};

/// Parses "linear" | "cosine" | "quadratic" | "sigmoid"; throws InvalidArgument naming the valid choices.
BetaSchedule parse_beta_schedule(const std::string& name);
std::string to_string(BetaSchedule s);

/// β_1..β_T of a named schedule (index i is the paper's t = i + 1).
///  - linear: DDPM, β from 1e-4 to 0.02 scaled by 1000/T;
///  - cosine: Improved DDPM eq. 17, s = 0.008, β capped at 0.999;
///  - quadratic: (linspace(√β_1, √β_T))² with the linear end points;
///  - sigmoid: ᾱ(t) from a sigmoid over [-3, 3] (Jabri et al., lucidrains' definition), β capped at 0.999.
std::vector<double> make_betas(BetaSchedule schedule, int64_t timesteps);

/// ᾱ_t = Π_{s≤t} (1 - β_s).
std::vector<double> alphas_cumprod(const std::vector<double>& betas);

/// The kept timesteps (ascending, 0-based) of improved-diffusion's `space_timesteps`:
/// "ddimN" = an even stride starting at 0 with exactly N steps; "a,b,c" = per-section counts over equal sections;
/// a single number "N" = one section of N steps. Throws InvalidArgument when the spec cannot be met.
std::vector<int64_t> space_timesteps(int64_t timesteps, const std::string& spec);

/// diffusers' timestep spacings (DDIMScheduler.set_timesteps), returned ascending.
enum class Spacing { linspace, leading, trailing };
Spacing parse_spacing(const std::string& name);
std::string to_string(Spacing s);
std::vector<int64_t> diffusers_timesteps(int64_t timesteps, int64_t steps, Spacing spacing, int64_t steps_offset = 0);

/// DDIM's "quadratic" choice (its CIFAR-10 experiments): τ_i = ⌊(i √(0.8 T)/(S-1))²⌋, made distinct.
std::vector<int64_t> quadratic_timesteps(int64_t timesteps, int64_t steps);
/// Steps evenly spaced in half log-SNR λ_t = ½ log(ᾱ_t/(1-ᾱ_t)) from λ_{T-1} to λ_0, rounded to the nearest
/// distinct timesteps: DPM-Solver's recommendation for low-resolution pixel models.
std::vector<int64_t> logsnr_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps);

/// Timesteps for `steps` sampling steps out of T: `spacing` is "ddim" (improved-diffusion "ddimN"), "even"
/// (improved-diffusion per-section counts with one section), "quadratic", "logsnr" (needs the schedule's ᾱ), or a
/// diffusers spacing name (linspace, leading, trailing).
std::vector<int64_t> respaced_timesteps(int64_t timesteps, int64_t steps, const std::string& spacing,
                                        const std::vector<double>& alphas_cumprod = {});

/// A (possibly respaced) schedule: its β and, for each of its steps, the original timestep the network sees.
struct Schedule {
  std::vector<double> betas;
  std::vector<int64_t> timestep_map;

  /// The full schedule of T steps (identity map).
  static Schedule make(BetaSchedule schedule, int64_t timesteps);
  int64_t size() const { return static_cast<int64_t>(betas.size()); }
  /// Keeps the given ascending steps of this schedule: β'_i = 1 - ᾱ_{τ_i}/ᾱ_{τ_{i-1}} (DDIM §4.2, respace.py),
  /// so the kept ᾱ are reproduced exactly; the map composes with this schedule's own.
  Schedule respace(const std::vector<int64_t>& kept) const;
};

}  // namespace ddpm

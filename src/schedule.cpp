#include "ddpm/schedule.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "ddpm/errors.h"
#include "ddpm/resources.h"

namespace ddpm {
namespace {

// Python's round() and numpy's round both round half to even; the reference timestep lists depend on it.
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

/// Bytes a diffusion holds per timestep: about 20 arrays of doubles (β, ᾱ, the posterior coefficients, their
/// tensors) and the timestep map, rounded up.
constexpr uint64_t kScheduleBytesPerStep = 256;

void check_timesteps(int64_t T) {
  if (T < 1) throw InvalidArgument("the number of diffusion timesteps must be at least 1 (got " + std::to_string(T) + ")");
  // A diffusion keeps about 20 per-step arrays of doubles (β, ᾱ, posterior coefficients, their tensors, the map).
  require_memory(bytes_of(static_cast<uint64_t>(T), kScheduleBytesPerStep),
                 "a noise schedule of T = " + std::to_string(T) + " steps", "use fewer timesteps", "timesteps");
}

std::vector<double> betas_from_alpha_bar(int64_t T, double (*alpha_bar)(double), double max_beta) {
  // Improved DDPM eq. 17: β_t = min(1 - ᾱ(t/T)/ᾱ((t-1)/T), max_beta).
  std::vector<double> betas(T);
  for (int64_t i = 0; i < T; ++i) {
    const double t1 = static_cast<double>(i) / T, t2 = static_cast<double>(i + 1) / T;
    betas[i] = std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta);
  }
  return betas;
}

double cosine_alpha_bar(double t) {
  const double s = 0.008;
  const double c = std::cos((t + s) / (1.0 + s) * M_PI / 2.0);
  return c * c;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

double sigmoid_alpha_bar(double t) {
  // "On the importance of noise scheduling" (Chen 2023): start -3, end 3, τ = 1; normalised so ᾱ(0) = 1.
  const double start = -3.0, end = 3.0;
  const double v_start = sigmoid(start), v_end = sigmoid(end);
  auto raw = [&](double u) { return (v_end - sigmoid(u * (end - start) + start)) / (v_end - v_start); };
  return raw(t) / raw(0.0);
}

}  // namespace

BetaSchedule parse_beta_schedule(const std::string& name) { return parse_name<BetaSchedule>(name); }

std::string to_string(BetaSchedule s) { return name_of(s); }

std::vector<double> make_betas(BetaSchedule schedule, int64_t T) {
  check_timesteps(T);
  const double scale = 1000.0 / static_cast<double>(T);
  const double beta_start = scale * 1e-4, beta_end = scale * 0.02;
  std::vector<double> betas(T);
  switch (schedule) {
    case BetaSchedule::linear:
      for (int64_t i = 0; i < T; ++i)
        betas[i] = T == 1 ? beta_start : beta_start + (beta_end - beta_start) * static_cast<double>(i) / (T - 1);
      break;
    case BetaSchedule::quadratic: {
      const double a = std::sqrt(beta_start), b = std::sqrt(beta_end);
      for (int64_t i = 0; i < T; ++i) {
        const double r = T == 1 ? a : a + (b - a) * static_cast<double>(i) / (T - 1);
        betas[i] = r * r;
      }
      break;
    }
    case BetaSchedule::cosine: return betas_from_alpha_bar(T, cosine_alpha_bar, 0.999);
    case BetaSchedule::sigmoid: return betas_from_alpha_bar(T, sigmoid_alpha_bar, 0.999);
  }
  for (double b : betas)
    if (!(b > 0.0 && b < 1.0))
      throw InvalidArgument("schedule '" + to_string(schedule) + "' with T = " + std::to_string(T) +
                            " gives β outside (0, 1); use more timesteps");
  return betas;
}

std::vector<double> alphas_cumprod(const std::vector<double>& betas) {
  std::vector<double> out(betas.size());
  double acc = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) out[i] = acc *= (1.0 - betas[i]);
  return out;
}

std::vector<int64_t> space_timesteps(int64_t T, const std::string& spec) {
  check_timesteps(T);
  auto bad = [&](const std::string& why) {
    return InvalidArgument("cannot respace " + std::to_string(T) + " timesteps with '" + spec + "': " + why);
  };
  if (spec.rfind("ddim", 0) == 0) {
    int64_t desired = 0;
    try {
      size_t pos = 0;
      desired = std::stoll(spec.substr(4), &pos);
      if (pos != spec.size() - 4) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw bad("expected ddimN with N a number");
    }
    if (desired == T) {
      std::vector<int64_t> all(T);
      for (int64_t i = 0; i < T; ++i) all[i] = i;
      return all;
    }
    // The smallest stride i ≥ 1 for which range(0, T, i) has exactly N elements.
    for (int64_t stride = 1; stride < T; ++stride) {
      if ((T + stride - 1) / stride == desired) {
        std::vector<int64_t> out;
        for (int64_t i = 0; i < T; i += stride) out.push_back(i);
        return out;
      }
    }
    throw bad("no even stride gives exactly " + std::to_string(desired) + " steps");
  }
  std::vector<int64_t> counts;
  {
    std::stringstream ss(spec);
    std::string item;
    while (std::getline(ss, item, ',')) {
      try {
        size_t pos = 0;
        counts.push_back(std::stoll(item, &pos));
        if (pos != item.size()) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        throw bad("expected ddimN or comma-separated step counts");
      }
    }
  }
  if (counts.empty()) throw bad("empty spec");
  const int64_t sections = static_cast<int64_t>(counts.size());
  const int64_t size_per = T / sections, extra = T % sections;
  std::set<int64_t> steps;
  int64_t start = 0;
  for (int64_t i = 0; i < sections; ++i) {
    const int64_t size = size_per + (i < extra ? 1 : 0);
    const int64_t count = counts[i];
    if (count < 1) throw bad("every section needs at least one step");
    if (size < count) throw bad("section of " + std::to_string(size) + " steps cannot hold " + std::to_string(count));
    const double frac_stride = count <= 1 ? 1.0 : static_cast<double>(size - 1) / static_cast<double>(count - 1);
    double cur = 0.0;
    for (int64_t k = 0; k < count; ++k) {
      steps.insert(start + round_half_even(cur));
      cur += frac_stride;
    }
    start += size;
  }
  return {steps.begin(), steps.end()};
}

Spacing parse_spacing(const std::string& name) {
  if (name == "linspace") return Spacing::linspace;
  if (name == "leading") return Spacing::leading;
  if (name == "trailing") return Spacing::trailing;
  throw InvalidArgument("unknown spacing '" + name + "' (choose ddim, even, quadratic, logsnr, linspace, leading or trailing)");
}

std::string to_string(Spacing s) {
  switch (s) {
    case Spacing::linspace: return "linspace";
    case Spacing::leading: return "leading";
    case Spacing::trailing: return "trailing";
  }
  return "?";
}

std::vector<int64_t> diffusers_timesteps(int64_t T, int64_t n, Spacing spacing, int64_t steps_offset) {
  check_timesteps(T);
  if (n < 1 || n > T)
    throw InvalidArgument("the number of sampling steps must be between 1 and T = " + std::to_string(T) + " (got " +
                          std::to_string(n) + ")");
  std::vector<int64_t> out;
  switch (spacing) {
    case Spacing::linspace:
      // np.linspace(0, T - 1, n).round()
      for (int64_t k = 0; k < n; ++k) {
        const double v = n == 1 ? 0.0 : (k == n - 1 ? double(T - 1) : k * (double(T - 1) / double(n - 1)));
        out.push_back(round_half_even(v));
      }
      break;
    case Spacing::leading: {
      const int64_t ratio = T / n;
      for (int64_t k = 0; k < n; ++k) out.push_back(k * ratio + steps_offset);
      break;
    }
    case Spacing::trailing: {
      // np.round(np.arange(T, 0, -T / n)) - 1
      const double ratio = double(T) / double(n);
      for (int64_t k = 0;; ++k) {
        const double v = double(T) - k * ratio;
        if (!(v > 0.0)) break;
        out.push_back(round_half_even(v) - 1);
      }
      break;
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  for (int64_t t : out)
    if (t < 0 || t >= T)
      throw InvalidArgument("spacing '" + to_string(spacing) + "' gives timestep " + std::to_string(t) +
                            " outside 0.." + std::to_string(T - 1));
  return out;
}

namespace {

/// Rounds a grid of real timesteps to distinct integers in 0..T-1, keeping the order: each step moves up past its
/// predecessor where rounding made them collide, and down where that would overrun the end.
std::vector<int64_t> distinct_ascending(const std::vector<double>& grid, int64_t T) {
  const int64_t n = static_cast<int64_t>(grid.size());
  std::vector<int64_t> out(n);
  for (int64_t k = 0; k < n; ++k) {
    out[k] = std::clamp<int64_t>(std::llround(grid[k]), 0, T - 1);
    if (k > 0) out[k] = std::max(out[k], out[k - 1] + 1);
  }
  for (int64_t k = n - 1; k >= 0; --k) {
    out[k] = std::min(out[k], T - n + k);
    if (k + 1 < n) out[k] = std::min(out[k], out[k + 1] - 1);
  }
  return out;
}

}  // namespace

std::vector<int64_t> quadratic_timesteps(int64_t T, int64_t steps) {
  check_timesteps(T);
  if (steps < 1 || steps > T) throw InvalidArgument("quadratic spacing needs 1..T steps");
  // DDIM's CIFAR-10 choice: τ_i = (i · √(0.8 T)/(S-1))², i = 0..S-1, truncated to integers.
  std::vector<double> grid(steps);
  const double top = std::sqrt(0.8 * static_cast<double>(T));
  for (int64_t i = 0; i < steps; ++i) {
    const double r = steps == 1 ? 0.0 : top * static_cast<double>(i) / static_cast<double>(steps - 1);
    grid[i] = std::floor(r * r);
  }
  return distinct_ascending(grid, T);
}

std::vector<int64_t> logsnr_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps) {
  const int64_t T = static_cast<int64_t>(alphas_cumprod.size());
  check_timesteps(T);
  if (steps < 1 || steps > T) throw InvalidArgument("logsnr spacing needs 1..T steps");
  std::vector<double> lambda(T);  // half log-SNR, decreasing in t
  for (int64_t t = 0; t < T; ++t) lambda[t] = 0.5 * std::log(alphas_cumprod[t] / (1.0 - alphas_cumprod[t]));
  for (int64_t t = 1; t < T; ++t)
    if (!(lambda[t] < lambda[t - 1])) throw InvalidArgument("logsnr spacing needs a strictly decreasing ᾱ");
  // Targets evenly spaced in λ from λ(T-1) to λ(0); each becomes the (fractional) timestep where the piecewise
  // linear λ(t) reaches it, then the nearest integer.
  std::vector<double> grid(steps);
  int64_t seg = T - 1;
  for (int64_t i = steps - 1; i >= 0; --i) {
    const double target = steps == 1 ? lambda[T - 1]
                                     : lambda[T - 1] + (lambda[0] - lambda[T - 1]) * static_cast<double>(steps - 1 - i) /
                                                           static_cast<double>(steps - 1);
    while (seg > 0 && lambda[seg - 1] <= target) --seg;  // lambda[seg] <= target < lambda[seg-1]
    if (seg == 0) {
      grid[i] = 0.0;
    } else {
      const double f = (target - lambda[seg]) / (lambda[seg - 1] - lambda[seg]);
      grid[i] = static_cast<double>(seg) - f;
    }
  }
  return distinct_ascending(grid, T);
}

std::vector<int64_t> respaced_timesteps(int64_t T, int64_t steps, const std::string& spacing,
                                        const std::vector<double>& alphas_cumprod) {
  check_timesteps(T);
  if (steps < 1 || steps > T)
    throw InvalidArgument("the number of sampling steps must be between 1 and T = " + std::to_string(T) + " (got " +
                          std::to_string(steps) + ")");
  if (spacing == "ddim") return space_timesteps(T, "ddim" + std::to_string(steps));
  if (spacing == "even") return space_timesteps(T, std::to_string(steps));
  if (spacing == "quadratic") return quadratic_timesteps(T, steps);
  if (spacing == "logsnr") {
    if (static_cast<int64_t>(alphas_cumprod.size()) != T)
      throw InvalidArgument("logsnr spacing needs the schedule's ᾱ (" + std::to_string(T) + " values)");
    return logsnr_timesteps(alphas_cumprod, steps);
  }
  return diffusers_timesteps(T, steps, parse_spacing(spacing));
}

Schedule Schedule::make(BetaSchedule schedule, int64_t timesteps) {
  Schedule s;
  s.betas = make_betas(schedule, timesteps);
  s.timestep_map.resize(timesteps);
  for (int64_t i = 0; i < timesteps; ++i) s.timestep_map[i] = i;
  return s;
}

Schedule Schedule::respace(const std::vector<int64_t>& kept) const {
  if (kept.empty()) throw InvalidArgument("respacing needs at least one timestep");
  const std::vector<double> abar = alphas_cumprod(betas);
  Schedule out;
  double last = 1.0;
  int64_t prev = -1;
  for (int64_t k : kept) {
    if (k <= prev || k >= size())
      throw InvalidArgument("respaced timesteps must be ascending and within 0.." + std::to_string(size() - 1));
    out.betas.push_back(1.0 - abar[k] / last);
    out.timestep_map.push_back(timestep_map[k]);
    last = abar[k];
    prev = k;
  }
  return out;
}

}  // namespace ddpm

// ddpm schedule: β_t, ᾱ_t and SNR of one or more schedules as CSV and plots.
#include <cmath>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"

namespace ddpm::cli {
namespace {

struct ScheduleArgs {
  std::string schedules = "linear,cosine", csv, plot, plot_snr;
  int64_t timesteps = 1000;
  std::string respace;
  bool json = false;
};

void run_schedule(const ScheduleArgs& a) {
  check_writable(a.csv);
  check_writable(a.plot);
  check_writable(a.plot_snr);
  std::vector<std::string> names;
  {
    std::stringstream ss(a.schedules);
    std::string n;
    while (std::getline(ss, n, ',')) names.push_back(n);
  }
  std::ostringstream csv;
  csv << "schedule,t,timestep,beta,alpha_bar,snr\n";
  csv.precision(17);
  std::vector<LineSeries> abar_series, snr_series;
  nlohmann::json j = nlohmann::json::array();
  int color = 0;
  for (const auto& n : names) {
    Schedule s = Schedule::make(parse_beta_schedule(n), a.timesteps);
    if (!a.respace.empty()) s = s.respace(space_timesteps(a.timesteps, a.respace));
    const auto ac = alphas_cumprod(s.betas);
    LineSeries la, ls;
    la.label = ls.label = n;
    la.color = ls.color = palette(color++);
    for (int64_t i = 0; i < s.size(); ++i) {
      const double snr = ac[i] / (1 - ac[i]);
      csv << n << "," << i << "," << s.timestep_map[i] << "," << s.betas[i] << "," << ac[i] << "," << snr << "\n";
      const double u = static_cast<double>(s.timestep_map[i] + 1) / a.timesteps;
      la.x.push_back(u);
      la.y.push_back(ac[i]);
      ls.x.push_back(u);
      ls.y.push_back(snr);
    }
    abar_series.push_back(la);
    snr_series.push_back(ls);
    j.push_back({{"schedule", n}, {"steps", s.size()}, {"alpha_bar_last", ac.back()}, {"beta_first", s.betas.front()},
                 {"beta_last", s.betas.back()}});
  }
  if (!a.csv.empty()) write_file_atomic(a.csv, csv.str());
  if (!a.plot.empty()) {
    PlotOptions po;
    po.title = "alpha_bar_t, T = " + std::to_string(a.timesteps);
    po.xlabel = "t / T";
    po.ylabel = "alpha_bar";
    po.height = 600;
    save_line_plot_png(a.plot, abar_series, po);
  }
  if (!a.plot_snr.empty()) {
    PlotOptions po;
    po.title = "SNR(t) = alpha_bar / (1 - alpha_bar)";
    po.xlabel = "t / T";
    po.ylabel = "SNR (log scale)";
    po.log_y = true;
    po.height = 600;
    save_line_plot_png(a.plot_snr, snr_series, po);
  }
  if (a.json) std::cout << j.dump() << "\n";
  else if (a.csv.empty()) std::cout << csv.str();
}

}  // namespace

void register_schedule(CLI::App& app) {
  auto a = std::make_shared<ScheduleArgs>();
  auto* c = app.add_subcommand("schedule", "print or plot beta_t, alpha_bar_t and SNR of noise schedules");
  c->add_option("--schedule", a->schedules, "comma-separated: linear, cosine, quadratic, sigmoid")->capture_default_str();
  c->add_option("--timesteps,-T", a->timesteps, "diffusion steps T")->capture_default_str();
  c->add_option("--respace", a->respace, "keep only these steps: ddimN or per-section counts a,b,c");
  c->add_option("--csv", a->csv, "write the CSV here (default: stdout)");
  c->add_option("--plot", a->plot, "plot alpha_bar_t to this PNG");
  c->add_option("--plot-snr", a->plot_snr, "plot SNR(t) (log scale) to this PNG");
  c->add_flag("--json", a->json, "print a JSON summary instead of the CSV");
  c->callback([a] { run_schedule(*a); });
}

}  // namespace ddpm::cli

// ddpm plot: line plots of measurements kept as JSON lines (the FID-against-training-step curve of
// docs/data/fid_curve.jsonl, a run's metrics.jsonl).
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/io/curves.h"
#include "ddpm/io/file.h"

namespace ddpm::cli {
namespace {

struct PlotArgs {
  std::string input, out, x = "step", y, title, xlabel, ylabel, group;
  std::vector<std::string> where;
  bool log_y = false;
  int width = 900, height = 600;
};

void run_plot(const PlotArgs& a) {
  check_writable(a.out);
  CurveSpec spec;
  spec.x = a.x;
  spec.y = a.y;
  if (!a.group.empty()) spec.group = split_list(a.group);
  for (const auto& w : a.where) spec.where.push_back(parse_where(w));
  auto series = curves_from_json_lines(read_file(a.input), spec);
  for (size_t i = 0; i < series.size(); ++i) {
    series[i].color = palette(static_cast<int>(i));
    series[i].markers = true;
  }
  PlotOptions po;
  po.width = a.width;
  po.height = a.height;
  po.title = a.title.empty() ? a.y + " against " + a.x : a.title;
  po.xlabel = a.xlabel.empty() ? a.x : a.xlabel;
  po.ylabel = a.ylabel.empty() ? a.y + (a.log_y ? " (log scale)" : "") : a.ylabel;
  po.log_y = a.log_y;
  save_line_plot_png(a.out, series, po);
  if (global_options().quiet) return;
  for (const auto& s : series) {
    std::printf("%s:", s.label.empty() ? a.y.c_str() : s.label.c_str());
    for (size_t i = 0; i < s.x.size(); ++i) std::printf(" %g=%.4g", s.x[i], s.y[i]);
    std::printf("\n");
  }
}

}  // namespace

void register_plot(CLI::App& app) {
  auto a = std::make_shared<PlotArgs>();
  auto* c = app.add_subcommand("plot", "line plots of measurements kept as JSON lines (e.g. FID against training step)");
  c->footer(
      "Each line of FILE is one JSON object; x and y are dotted paths into it. Lines without numbers at both are\n"
      "skipped, so one file can hold several kinds of measurement. Example (the curve of docs/RESULTS.md):\n"
      "  ddpm plot docs/data/fid_curve.jsonl -y result.fid --group weights,sampler --log-y -o fid_curve.png");
  c->add_option("file", a->input, "JSON lines to read")->required()->check(CLI::ExistingFile);
  c->add_option("-o,--out", a->out, "PNG to write")->required();
  c->add_option("-x", a->x, "dotted path of the x value")->capture_default_str();
  c->add_option("-y", a->y, "dotted path of the y value (e.g. result.fid, loss)")->required();
  c->add_option("--group", a->group, "comma-separated fields: one curve per distinct combination (e.g. weights,sampler)");
  c->add_option("--where", a->where, "keep only lines with FIELD=VALUE (repeatable; e.g. --where weights=ema)");
  c->add_flag("--log-y", a->log_y, "logarithmic y axis");
  c->add_option("--title", a->title, "title (default: Y against X)");
  c->add_option("--xlabel", a->xlabel, "x axis label (default: the x path)");
  c->add_option("--ylabel", a->ylabel, "y axis label (default: the y path)");
  c->add_option("--width", a->width, "image width in pixels")->check(CLI::Range(200, 4000))->capture_default_str();
  c->add_option("--height", a->height, "image height in pixels")->check(CLI::Range(200, 4000))->capture_default_str();
  c->callback([a] { run_plot(*a); });
}

}  // namespace ddpm::cli

// Plots as PNG files: scatter plots of 2-D point sets and line plots of curves, with axes, ticks and labels.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

using Color = std::array<uint8_t, 3>;

struct ScatterLayer {
  std::vector<float> xy;  ///< x0, y0, x1, y1, ...
  Color color{31, 119, 180};
  float alpha = 0.35f;
  float radius = 1.5f;
  std::string label;
};

struct LineSeries {
  std::vector<double> x, y;
  Color color{31, 119, 180};
  std::string label;
  bool markers = false;  ///< a dot at every point (curves of few measurements; a one-point series shows only then)
};

struct PlotOptions {
  int width = 800, height = 800;
  std::string title, xlabel, ylabel;
  bool log_y = false;
  /// Data range; when lo == hi it is taken from the data (with a margin).
  double x_lo = 0, x_hi = 0, y_lo = 0, y_hi = 0;
};

/// Draws the layers in order (later on top) and writes the PNG atomically; throws IoError.
void save_scatter_png(const std::string& path, const std::vector<ScatterLayer>& layers, PlotOptions options);
/// Draws curves against a common x axis and writes the PNG atomically; throws IoError.
void save_line_plot_png(const std::string& path, const std::vector<LineSeries>& series, PlotOptions options);

/// Encodes 8-bit RGB (or grey, channels = 1) pixels, row-major, as PNG bytes.
std::string encode_png(const uint8_t* pixels, int width, int height, int channels);

}  // namespace ddpm

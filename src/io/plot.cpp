#include "ddpm/io/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

extern "C" {
unsigned char* stbi_write_png_to_mem(const unsigned char* pixels, int stride_bytes, int x, int y, int n, int* out_len);
}

namespace ddpm {
namespace {

const Color kBlack{0, 0, 0}, kGrid{225, 225, 225}, kWhite{255, 255, 255};

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<size_t>(w) * h * 3, 255) {}

  void blend(int x, int y, Color c, float a) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
    for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>(std::lround(p[k] * (1 - a) + c[k] * a));
  }
  void rect(int x0, int y0, int x1, int y1, Color c, float a = 1.f) {
    for (int y = std::max(0, y0); y < std::min(h_, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(w_, x1); ++x) blend(x, y, c, a);
  }
  void disc(float cx, float cy, float r, Color c, float a) {
    const int x0 = static_cast<int>(std::floor(cx - r)), x1 = static_cast<int>(std::ceil(cx + r));
    const int y0 = static_cast<int>(std::floor(cy - r)), y1 = static_cast<int>(std::ceil(cy + r));
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) {
        const float dx = x + 0.5f - cx, dy = y + 0.5f - cy;
        if (dx * dx + dy * dy <= r * r) blend(x, y, c, a);
      }
  }
  void line(float x0, float y0, float x1, float y1, Color c, float width = 1.5f) {
    const float len = std::hypot(x1 - x0, y1 - y0);
    const int n = std::max(1, static_cast<int>(len * 2));
    for (int i = 0; i <= n; ++i) {
      const float u = static_cast<float>(i) / n;
      disc(x0 + u * (x1 - x0), y0 + u * (y1 - y0), width / 2, c, 1.f);
    }
  }
  /// Text at (x, y) top-left, in the stb_easy_font glyphs scaled up; returns the width drawn.
  int text(float x, float y, const std::string& s, Color c, float scale = 2.f, bool vertical = false) {
    static char buf[200000];
    std::string copy = s;
    const int quads = stb_easy_font_print(0, 0, copy.data(), nullptr, buf, sizeof(buf));
    for (int q = 0; q < quads; ++q) {
      const float* v0 = reinterpret_cast<const float*>(buf + q * 64);
      const float* v2 = reinterpret_cast<const float*>(buf + q * 64 + 32);
      float ax = v0[0] * scale, ay = v0[1] * scale, bx = v2[0] * scale, by = v2[1] * scale;
      if (vertical) {  // rotate 90° counter-clockwise: (u, v) → (v, -u)
        const float nax = ay, nay = -bx, nbx = by, nby = -ax;
        ax = nax, ay = nay, bx = nbx, by = nby;
      }
      rect(static_cast<int>(std::lround(x + ax)), static_cast<int>(std::lround(y + ay)),
           static_cast<int>(std::lround(x + bx)), static_cast<int>(std::lround(y + by)), c);
    }
    return static_cast<int>(stb_easy_font_width(copy.data()) * scale);
  }
  static int text_width(const std::string& s, float scale = 2.f) {
    std::string copy = s;
    return static_cast<int>(stb_easy_font_width(copy.data()) * scale);
  }
  void save(const std::string& path) const { write_file_atomic(path, encode_png(px_.data(), w_, h_, 3)); }
  int width() const { return w_; }
  int height() const { return h_; }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

std::string format_tick(double v) {
  char b[32];
  if (v != 0 && (std::fabs(v) < 1e-3 || std::fabs(v) >= 1e5))
    std::snprintf(b, sizeof b, "%.0e", v);
  else
    std::snprintf(b, sizeof b, "%g", std::fabs(v) < 1e-12 ? 0.0 : v);
  return b;
}

std::vector<double> nice_ticks(double lo, double hi) {
  const double span = hi - lo;
  const double raw = span / 6;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(v);
  return t;
}

/// Ticks of the y axis as (position, label). On a log axis (positions in log10 units) the ticks are values people
/// read at a glance, labelled as numbers ("2", "50", "0.1"): 1-2-5 steps; whole decades where those would crowd the
/// axis; every integer multiple of a power of ten where 1-2-5 leaves fewer than three.
std::vector<std::pair<double, std::string>> y_ticks(double lo, double hi, bool log_y) {
  std::vector<std::pair<double, std::string>> t;
  if (!log_y) {
    for (double v : nice_ticks(lo, hi)) t.emplace_back(v, format_tick(v));
    return t;
  }
  auto with = [&](std::initializer_list<double> mantissas) {
    t.clear();
    for (int k = static_cast<int>(std::floor(lo)); k <= static_cast<int>(std::ceil(hi)); ++k)
      for (double m : mantissas) {
        const double v = m * std::pow(10.0, k), p = std::log10(v);
        if (p >= lo - 1e-9 && p <= hi + 1e-9) t.emplace_back(p, format_tick(v));
      }
    return t.size();
  };
  const size_t n = with({1, 2, 5});
  if (n > 12) {
    if (with({1}) > 12) {  // very many decades: every few
      t.clear();
      for (double v : nice_ticks(lo, hi)) t.emplace_back(v, "1e" + format_tick(v));
    }
  } else if (n < 3) {
    with({1, 2, 3, 4, 5, 6, 7, 8, 9});
  }
  return t;
}

struct Frame {
  int left = 90, right = 30, top = 50, bottom = 70;
  double x_lo, x_hi, y_lo, y_hi;
  int w, h;
  float px(double x) const { return left + static_cast<float>((x - x_lo) / (x_hi - x_lo)) * (w - left - right); }
  float py(double y) const { return h - bottom - static_cast<float>((y - y_lo) / (y_hi - y_lo)) * (h - top - bottom); }
};

void fix_range(double& lo, double& hi) {
  if (!(hi > lo)) {
    lo -= 1;
    hi += 1;
  }
}

/// Leaves room on the left for the widest y tick label and the rotated axis label.
void fit_left_margin(Frame& f, bool log_y) {
  int widest = 0;
  for (const auto& [v, s] : y_ticks(f.y_lo, f.y_hi, log_y)) widest = std::max(widest, Canvas::text_width(s));
  f.left = std::max(f.left, widest + 48);
}

void draw_frame(Canvas& c, const Frame& f, const PlotOptions& o, bool log_y) {
  for (double v : nice_ticks(f.x_lo, f.x_hi)) {
    const float x = f.px(v);
    c.rect(static_cast<int>(x), f.top, static_cast<int>(x) + 1, f.h - f.bottom, kGrid);
    const std::string s = format_tick(v);
    c.text(x - Canvas::text_width(s) / 2.f, f.h - f.bottom + 8, s, kBlack);
  }
  for (const auto& [v, s] : y_ticks(f.y_lo, f.y_hi, log_y)) {
    const float y = f.py(v);
    c.rect(f.left, static_cast<int>(y), f.w - f.right, static_cast<int>(y) + 1, kGrid);
    c.text(f.left - 8 - Canvas::text_width(s), y - 7, s, kBlack);
  }
  c.rect(f.left, f.top, f.left + 1, f.h - f.bottom + 1, kBlack);
  c.rect(f.left, f.h - f.bottom, f.w - f.right, f.h - f.bottom + 1, kBlack);
  c.rect(f.w - f.right, f.top, f.w - f.right + 1, f.h - f.bottom + 1, kBlack);
  c.rect(f.left, f.top, f.w - f.right + 1, f.top + 1, kBlack);
  if (!o.title.empty()) {
    const float scale = Canvas::text_width(o.title, 2.5f) < f.w - 20 ? 2.5f : 2.f;
    c.text((f.w - Canvas::text_width(o.title, scale)) / 2.f, 14, o.title, kBlack, scale);
  }
  if (!o.xlabel.empty()) c.text((f.w - Canvas::text_width(o.xlabel)) / 2.f, f.h - 32, o.xlabel, kBlack);
  if (!o.ylabel.empty())
    c.text(12, (f.h + Canvas::text_width(o.ylabel)) / 2.f, o.ylabel, kBlack, 2.f, /*vertical=*/true);
}

void draw_legend(Canvas& c, const Frame& f, const std::vector<std::pair<std::string, Color>>& entries) {
  int y = f.top + 10;
  for (const auto& [label, color] : entries) {
    if (label.empty()) continue;
    const int x = f.w - f.right - 20 - Canvas::text_width(label) - 22;
    c.rect(x - 6, y - 4, f.w - f.right - 10, y + 18, kWhite, 0.85f);
    c.rect(x, y + 3, x + 14, y + 11, color);
    c.text(x + 20, y, label, kBlack);
    y += 24;
  }
}

}  // namespace

std::string encode_png(const uint8_t* pixels, int width, int height, int channels) {
  int len = 0;
  unsigned char* png = stbi_write_png_to_mem(pixels, width * channels, width, height, channels, &len);
  if (!png) throw IoError("PNG encoding failed");
  std::string out(reinterpret_cast<char*>(png), static_cast<size_t>(len));
  std::free(png);
  return out;
}

void save_scatter_png(const std::string& path, const std::vector<ScatterLayer>& layers, PlotOptions o) {
  Frame f;
  f.w = o.width;
  f.h = o.height;
  if (o.x_lo == o.x_hi || o.y_lo == o.y_hi) {
    double lo = 1e300, hi = -1e300;
    for (const auto& l : layers)
      for (float v : l.xy)
        if (std::isfinite(v)) lo = std::min(lo, double(v)), hi = std::max(hi, double(v));
    if (lo > hi) lo = -1, hi = 1;
    const double m = 0.05 * (hi - lo);
    o.x_lo = o.y_lo = lo - m;
    o.x_hi = o.y_hi = hi + m;
  }
  f.x_lo = o.x_lo, f.x_hi = o.x_hi, f.y_lo = o.y_lo, f.y_hi = o.y_hi;
  fix_range(f.x_lo, f.x_hi);
  fix_range(f.y_lo, f.y_hi);
  fit_left_margin(f, false);
  Canvas c(o.width, o.height);
  draw_frame(c, f, o, false);
  std::vector<std::pair<std::string, Color>> legend;
  for (const auto& l : layers) {
    for (size_t i = 0; i + 1 < l.xy.size(); i += 2) {
      const double x = l.xy[i], y = l.xy[i + 1];
      if (x < f.x_lo || x > f.x_hi || y < f.y_lo || y > f.y_hi) continue;
      c.disc(f.px(x), f.py(y), l.radius, l.color, l.alpha);
    }
    legend.emplace_back(l.label, l.color);
  }
  draw_legend(c, f, legend);
  c.save(path);
}

void save_line_plot_png(const std::string& path, const std::vector<LineSeries>& series, PlotOptions o) {
  Frame f;
  f.w = o.width;
  f.h = o.height;
  // On a log axis, values ≤ 0 have no place: they are left out (a gap in the curve).
  auto ty = [&](double y) { return o.log_y ? (y > 0 ? std::log10(y) : NAN) : y; };
  double xlo = 1e300, xhi = -1e300, ylo = 1e300, yhi = -1e300;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(ty(s.y[i]))) continue;
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
      ylo = std::min(ylo, ty(s.y[i])), yhi = std::max(yhi, ty(s.y[i]));
    }
  if (o.x_lo == o.x_hi) o.x_lo = xlo, o.x_hi = xhi;
  if (o.y_lo == o.y_hi) {
    const double m = 0.05 * (yhi - ylo);
    o.y_lo = ylo - m, o.y_hi = yhi + m;
  }
  f.x_lo = o.x_lo, f.x_hi = o.x_hi, f.y_lo = o.y_lo, f.y_hi = o.y_hi;
  fix_range(f.x_lo, f.x_hi);
  fix_range(f.y_lo, f.y_hi);
  fit_left_margin(f, o.log_y);
  Canvas c(o.width, o.height);
  draw_frame(c, f, o, o.log_y);
  std::vector<std::pair<std::string, Color>> legend;
  for (const auto& s : series) {
    for (size_t i = 1; i < s.x.size() && i < s.y.size(); ++i) {
      const double a = ty(s.y[i - 1]), b = ty(s.y[i]);
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      const double ca = std::clamp(a, f.y_lo, f.y_hi), cb = std::clamp(b, f.y_lo, f.y_hi);
      c.line(f.px(s.x[i - 1]), f.py(ca), f.px(s.x[i]), f.py(cb), s.color, 2.f);
    }
    if (s.markers)
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        const double v = ty(s.y[i]);
        if (std::isfinite(v) && v >= f.y_lo && v <= f.y_hi) c.disc(f.px(s.x[i]), f.py(v), 4.f, s.color, 1.f);
      }
    legend.emplace_back(s.label, s.color);
  }
  draw_legend(c, f, legend);
  c.save(path);
}

}  // namespace ddpm

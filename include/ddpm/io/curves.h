// Curves from JSON lines: one measurement per line (docs/data/fid_curve.jsonl, `ddpm sweep --json` rows, metrics.jsonl),
// grouped into line series for save_line_plot_png.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "ddpm/io/plot.h"

namespace ddpm {

struct CurveSpec {
  std::string x;                   ///< dotted path of the x value in each object ("step")
  std::string y;                   ///< dotted path of the y value ("result.fid")
  std::vector<std::string> group;  ///< one series per distinct combination of these fields ("weights", "sampler")
  /// Only lines where every field equals its value (compared as text: "weights=ema", "step=7177").
  std::vector<std::pair<std::string, std::string>> where;
};

/// Parses `text` as JSON lines (blank lines and lines starting with '#' are skipped) and returns one series per group,
/// in order of first appearance, each labelled "v1, v2" by its group values and sorted by x. A line without a number
/// at x or y (another kind of measurement in the same file) is skipped; where a group has two lines at the same x the
/// later one counts (a re-measurement). Throws FormatError naming the line for text that is not JSON objects, and
/// InvalidArgument when no line has numbers at both paths (a misspelt path). Colours are left at their default.
std::vector<LineSeries> curves_from_json_lines(const std::string& text, const CurveSpec& spec);

/// "weights=ema" → {"weights", "ema"}; throws InvalidArgument without '=' or with an empty field.
std::pair<std::string, std::string> parse_where(const std::string& clause);

}  // namespace ddpm

#include "ddpm/io/curves.h"

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ddpm/errors.h"

namespace ddpm {
namespace {

/// The value at a dotted path, or nullptr where a member is missing or a parent is not an object.
const nlohmann::json* at_path(const nlohmann::json& j, const std::string& path) {
  const nlohmann::json* p = &j;
  std::stringstream ss(path);
  std::string key;
  while (std::getline(ss, key, '.')) {
    if (!p->is_object()) return nullptr;
    auto it = p->find(key);
    if (it == p->end()) return nullptr;
    p = &*it;
  }
  return p;
}

/// A field's value as text, for grouping and filtering: strings as they are, anything else as compact JSON.
std::string as_text(const nlohmann::json* v) {
  if (!v) return {};
  if (v->is_string()) return v->get<std::string>();
  return v->dump();
}

}  // namespace

std::pair<std::string, std::string> parse_where(const std::string& clause) {
  const auto eq = clause.find('=');
  if (eq == std::string::npos || eq == 0)
    throw InvalidArgument("filter '" + clause + "' is not FIELD=VALUE (e.g. weights=ema)", "where");
  return {clause.substr(0, eq), clause.substr(eq + 1)};
}

std::vector<LineSeries> curves_from_json_lines(const std::string& text, const CurveSpec& spec) {
  if (spec.x.empty() || spec.y.empty()) throw InvalidArgument("curves need an x and a y path", spec.x.empty() ? "x" : "y");
  std::vector<std::string> order;                          // group labels by first appearance
  std::map<std::string, std::map<double, double>> points;  // label → x → y (later lines replace earlier ones)
  std::stringstream lines(text);
  std::string line;
  int number = 0;
  while (std::getline(lines, line)) {
    ++number;
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError("line " + std::to_string(number) + " is not JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw FormatError("line " + std::to_string(number) + " is not a JSON object");
    bool keep = true;
    for (const auto& [field, value] : spec.where) keep = keep && as_text(at_path(j, field)) == value;
    if (!keep) continue;
    const auto* x = at_path(j, spec.x);
    const auto* y = at_path(j, spec.y);
    if (!x || !y || !x->is_number() || !y->is_number()) continue;
    std::string label;
    for (const auto& g : spec.group) {
      const auto* v = at_path(j, g);
      label += (label.empty() ? "" : ", ") + (v ? as_text(v) : std::string("-"));
    }
    if (!points.count(label)) order.push_back(label);
    points[label][x->get<double>()] = y->get<double>();
  }
  if (order.empty())
    throw InvalidArgument("no line has numbers at both '" + spec.x + "' and '" + spec.y + "'" +
                              (spec.where.empty() ? "" : " among those the filters keep"),
                          "y");
  std::vector<LineSeries> out;
  for (const auto& label : order) {
    LineSeries s;
    s.label = label;
    for (const auto& [x, y] : points[label]) s.x.push_back(x), s.y.push_back(y);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ddpm

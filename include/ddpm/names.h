// One name table per enum: each enum that is spelled on the command line, in JSON or in a checkpoint specialises
// EnumNames with its names and what it is called, and parse_name / name_of do the rest (with one error message).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "ddpm/errors.h"

namespace ddpm {

/// Specialise with `static constexpr const char* what` (e.g. "schedule") and
/// `static constexpr std::pair<E, const char*> table[]`.
template <class E>
struct EnumNames;

/// "a", "a or b", "a, b or c".
inline std::string choice_list(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? (i + 1 == names.size() ? " or " : ", ") : "") + names[i];
  return out;
}

template <class E>
std::vector<std::string> enum_names() {
  std::vector<std::string> out;
  for (const auto& entry : EnumNames<E>::table) out.emplace_back(entry.second);
  return out;
}

/// The value named `name`; throws InvalidArgument "unknown WHAT 'name' (choose ...)".
template <class E>
E parse_name(const std::string& name) {
  for (const auto& entry : EnumNames<E>::table)
    if (name == entry.second) return entry.first;
  throw InvalidArgument("unknown " + std::string(EnumNames<E>::what) + " '" + name + "' (choose " +
                        choice_list(enum_names<E>()) + ")");
}

template <class E>
std::string name_of(E value) {
  for (const auto& entry : EnumNames<E>::table)
    if (value == entry.first) return entry.second;
  return "?";
}

/// JSON of every named enum is its name (found by nlohmann through ADL); reading a bad name throws InvalidArgument.
template <class E, class = decltype(EnumNames<E>::table)>
void to_json(nlohmann::json& j, E value) {
  j = name_of(value);
}
template <class E, class = decltype(EnumNames<E>::table)>
void from_json(const nlohmann::json& j, E& value) {
  value = parse_name<E>(j.get<std::string>());
}

}  // namespace ddpm

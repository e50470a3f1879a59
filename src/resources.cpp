#include "ddpm/resources.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

namespace ddpm {
namespace {

constexpr uint64_t kUnknown = std::numeric_limits<uint64_t>::max();

/// The first number of a file ("max" and unreadable files give kUnknown).
uint64_t read_number(const char* path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word) || word.empty() || word.find_first_not_of("0123456789") != std::string::npos) return kUnknown;
  try {
    return std::stoull(word);
  } catch (const std::exception&) {
    return kUnknown;
  }
}

uint64_t mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream s(line.substr(13));
    uint64_t kib = 0;
    if (s >> kib) return kib * 1024;
  }
  return kUnknown;
}

/// Room left under this process's cgroup limit, if any.
uint64_t cgroup_room() {
  uint64_t limit = read_number("/sys/fs/cgroup/memory.max"), used = read_number("/sys/fs/cgroup/memory.current");
  if (limit == kUnknown) {
    limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  if (limit == kUnknown || limit >= (uint64_t{1} << 62)) return kUnknown;  // v1 writes "no limit" as a huge number
  if (used == kUnknown) return limit;
  return used >= limit ? 0 : limit - used;
}

/// DDPM_MEMORY_LIMIT: bytes with an optional K, M, G or T (powers of 1024); kUnknown when unset or unreadable.
uint64_t env_limit() {
  const char* v = std::getenv("DDPM_MEMORY_LIMIT");
  if (!v || !*v) return kUnknown;
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  if (end == v || !(x >= 0) || !std::isfinite(x)) return kUnknown;
  double scale = 1;
  switch (*end) {
    case 'k': case 'K': scale = 1024.0; break;
    case 'm': case 'M': scale = 1024.0 * 1024; break;
    case 'g': case 'G': scale = 1024.0 * 1024 * 1024; break;
    case 't': case 'T': scale = 1024.0 * 1024 * 1024 * 1024; break;
    default: break;
  }
  const double b = x * scale;
  return b >= 1.8e19 ? kUnknown : static_cast<uint64_t>(b);
}

}  // namespace

uint64_t available_memory() {
  const uint64_t forced = env_limit();
  if (forced != kUnknown) return forced;
  const uint64_t a = mem_available(), c = cgroup_room();
  return a < c ? a : c;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(static_cast<long long>(bytes)) + (bytes == 1 ? " byte" : " bytes");
  int u = -1;
  while (bytes >= 1024 && u < 5) {
    bytes /= 1024;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, bytes < 10 ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

uint64_t bytes_of(uint64_t a, uint64_t b, uint64_t c) {
  const long double p = static_cast<long double>(a) * b * c;
  if (p >= static_cast<long double>(kUnknown)) return kUnknown;
  return a * b * c;
}

void require_memory(uint64_t bytes, const std::string& what, const std::string& hint, const std::string& field) {
  const uint64_t have = available_memory();
  if (have == kUnknown || bytes <= have) return;
  std::string m = what + " needs about " + (bytes == kUnknown ? std::string("more than 16 EiB") : format_bytes(static_cast<double>(bytes))) +
                  " of memory; this machine has " + format_bytes(static_cast<double>(have)) + " available";
  if (!hint.empty()) m += " (" + hint + ")";
  throw OutOfMemory(m, field);
}

}  // namespace ddpm

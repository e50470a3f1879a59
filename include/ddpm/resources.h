// Memory a piece of work will need, checked before it starts: a run that cannot fit is refused with a message that
// says how much it needs and how much the machine has, instead of being killed by the kernel half-way.
#pragma once

#include <cstdint>
#include <string>

#include "ddpm/errors.h"

namespace ddpm {

/// Work that needs more memory than the machine has available.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

/// Bytes this process can still allocate without swapping: MemAvailable of /proc/meminfo, lowered to the room left
/// under a cgroup (v2 memory.max or v1 limit_in_bytes) where one applies. The environment variable
/// DDPM_MEMORY_LIMIT (bytes, or with a K/M/G/T suffix) replaces it, for tests and for sharing a machine.
/// UINT64_MAX when nothing can be read (the check is then skipped).
uint64_t available_memory();

/// "1.5 GiB", "300 MiB", "12 KiB", "17 bytes".
std::string format_bytes(double bytes);

/// a·b and a·b·c in bytes, saturating at UINT64_MAX instead of wrapping (counts times sizes can overflow).
uint64_t bytes_of(uint64_t a, uint64_t b, uint64_t c = 1);

/// Throws OutOfMemory "WHAT needs about N of memory; this machine has M available" (with `hint` appended, e.g.
/// "give a smaller --batch") when `bytes` exceeds available_memory(). `field` names the setting at fault.
void require_memory(uint64_t bytes, const std::string& what, const std::string& hint = {}, const std::string& field = {});

}  // namespace ddpm

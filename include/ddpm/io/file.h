// Small file helpers: atomic writes (temporary file, flush, fsync, rename) so a crash never leaves half a file.
#pragma once

#include <string>

namespace ddpm {

/// Writes `bytes` to `path` atomically; throws IoError naming the path on failure.
void write_file_atomic(const std::string& path, const std::string& bytes);
/// Reads a whole file; throws IoError naming the path on failure.
std::string read_file(const std::string& path);
/// Throws IoError unless `dir` exists (creating it and its parents if needed) and is writable.
void ensure_directory(const std::string& dir);

}  // namespace ddpm

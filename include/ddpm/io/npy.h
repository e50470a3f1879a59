// NumPy .npy files: how arrays cross to and from Python.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace ddpm {

/// Reads a C-ordered .npy (versions 1–3) of float32, float64, int64, int32, int16, int8 or uint8, little endian.
/// Throws IoError if the file cannot be opened and FormatError if it is not a valid .npy (truncated, bad header,
/// unsupported dtype, Fortran order).
at::Tensor read_npy(const std::string& path);

/// Writes a tensor (float32, float64, int64, int32 or uint8) as a version 1.0 .npy, atomically.
void write_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace ddpm

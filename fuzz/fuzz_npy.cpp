// .npy files (training data, labels, --init noise): a typed ddpm::Error or a tensor whose every element reads.
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "ddpm/errors.h"
#include "ddpm/io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/ddpm_fuzz_" + std::to_string(::getpid()) + ".npy";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    (void)ddpm::read_npy(path).sum();
  } catch (const ddpm::Error&) {
  }
  return 0;
}

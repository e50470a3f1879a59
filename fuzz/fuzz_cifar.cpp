// CIFAR-10 binary batches (`--data cifar10:DIR`; 1 label byte and 3,072 pixel bytes per record, gzip read
// directly): a typed ddpm::Error, or images [N, 3, 32, 32] with N labels in 0..9.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/ddpm_fuzz_cifar_" + std::to_string(::getpid()) + ".bin";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    const auto s = ddpm::read_cifar10_batches({path});
    if (s.images.dim() != 4 || s.images.size(1) != 3 || s.labels.size(0) != s.images.size(0)) std::abort();
    if (s.labels.min().item<int64_t>() < 0 || s.labels.max().item<int64_t>() > 9) std::abort();
    (void)s.images.sum();
  } catch (const ddpm::Error&) {
  }
  return 0;
}

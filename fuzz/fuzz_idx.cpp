// IDX image and label files (MNIST, Fashion-MNIST, `--data idx:IMAGES,LABELS`; gzip read directly). The first byte
// splits the rest into the images file and the labels file (none when it is 0): a typed ddpm::Error, or images and
// labels whose every element reads and whose counts agree.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const std::string base = "/tmp/ddpm_fuzz_idx_" + std::to_string(::getpid());
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t cut = data[0] == 0 ? rest.size() : rest.size() * data[0] / 256;
  std::ofstream(base + "-images", std::ios::binary) << rest.substr(0, cut);
  std::ofstream(base + "-labels", std::ios::binary) << rest.substr(cut);
  try {
    const auto s = ddpm::read_idx(base + "-images", data[0] == 0 ? "" : base + "-labels");
    (void)s.images.sum();
    if (s.labels.defined() && (s.labels.size(0) != s.images.size(0) || (s.size() > 0 && s.labels.min().item<int64_t>() < 0)))
      std::abort();
  } catch (const ddpm::Error&) {
  }
  return 0;
}

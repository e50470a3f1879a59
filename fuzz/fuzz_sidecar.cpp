// The JSON sidecar of a TorchScript model (MODEL.json beside MODEL.pt: item_shape, schedule, timesteps, mean and
// variance types, classes). The module is the committed tests/data/ts_gaussian.pt; the input is its sidecar. A typed
// ddpm::Error, or a model whose settings hold together (a positive item shape, ᾱ in (0, 1]).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "ddpm/errors.h"
#include "ddpm/store/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string module = [] {
    const std::string p = "/tmp/ddpm_fuzz_sidecar_" + std::to_string(::getpid()) + ".pt";
    std::filesystem::copy_file(DDPM_TEST_DATA "/ts_gaussian.pt", p, std::filesystem::copy_options::overwrite_existing);
    return p;
  }();
  std::ofstream(ddpm::torchscript_sidecar(module), std::ios::binary)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    const auto m = ddpm::open_model(module);
    if (m.item_shape.empty()) std::abort();
    for (auto d : m.item_shape)
      if (d < 1) std::abort();
  } catch (const ddpm::Error&) {
  }
  return 0;
}

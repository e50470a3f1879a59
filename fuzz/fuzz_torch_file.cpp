// torch.save files (improved-diffusion checkpoints for `ddpm import`): the zip archive and the whitelisting pickle
// interpreter. A typed ddpm::Error, or tensors whose every element reads — never a Python global outside the
// whitelist run, never a read outside the archive.
#include <cstdint>
#include <string>

#include "ddpm/errors.h"
#include "ddpm/io/torch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto f = ddpm::decode_torch_file(bytes, "fuzz");
    for (const auto& kv : f.tensors) (void)kv.second.sum();  // touch every element
  } catch (const ddpm::Error&) {
  }
  return 0;
}

// The configurations of `ddpm import`: a diffusers folder's config.json and scheduler_config.json (first byte odd;
// the second byte splits the rest between the two files) and improved-diffusion's flag string (first byte even). The
// folder holds no weights and the flags name no file, so every input ends in a typed ddpm::Error — the question is
// only whether a malformed configuration is refused cleanly, with nothing built beyond what the machine can hold.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "ddpm/errors.h"
#include "ddpm/store/import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const std::string dir = "/tmp/ddpm_fuzz_import_" + std::to_string(::getpid());
  const std::string rest(reinterpret_cast<const char*>(data) + 2, size - 2);
  try {
    if (data[0] % 2 == 0) {
      (void)ddpm::import_improved(dir + "/missing.pt", rest);
    } else {
      std::filesystem::create_directories(dir);
      const size_t cut = rest.size() * data[1] / 256;
      std::ofstream(dir + "/config.json", std::ios::binary) << rest.substr(0, cut);
      if (data[0] % 4 == 1)
        std::ofstream(dir + "/scheduler_config.json", std::ios::binary) << rest.substr(cut);
      else
        std::filesystem::remove(dir + "/scheduler_config.json");
      (void)ddpm::import_diffusers(dir);
    }
  } catch (const ddpm::Error&) {
  }
  return 0;
}

// The strings a user types: model specs (gaussian:…, gmm: with a mixture JSON file), schedule and spacing names,
// and respacing specs ("ddim50", "10,20,30"). The first byte picks which; each must give a typed ddpm::Error or a
// valid answer (respaced steps strictly inside [0, T)).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "ddpm/errors.h"
#include "ddpm/schedule.h"
#include "ddpm/store/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string s(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0:
        (void)ddpm::open_model("gaussian:" + s);
        break;
      case 1: {
        static const std::string path = "/tmp/ddpm_fuzz_mixture_" + std::to_string(::getpid()) + ".json";
        std::ofstream(path, std::ios::binary) << s;
        (void)ddpm::open_model("gmm:" + path);
        break;
      }
      case 2:
        (void)ddpm::parse_beta_schedule(s);
        (void)ddpm::parse_spacing(s);
        break;
      case 3: {
        const int64_t T = 1 + (s.empty() ? 0 : static_cast<unsigned char>(s[0]) * 4);
        const auto steps = ddpm::space_timesteps(T, s.empty() ? s : s.substr(1));
        for (size_t i = 0; i < steps.size(); ++i)
          if (steps[i] < 0 || steps[i] >= T || (i > 0 && steps[i] <= steps[i - 1])) std::abort();
        break;
      }
    }
  } catch (const ddpm::Error&) {
  }
  return 0;
}

// Memory bounds (src/resources.cpp): the machine's available memory read independently from /proc/meminfo, byte
// formatting, saturating products, the DDPM_MEMORY_LIMIT override, and the refusals up front of a schedule, a
// generation and a training step that would not fit, each naming the setting at fault.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "ddpm/data/images.h"
#include "ddpm/diffusion_config.h"
#include "ddpm/io/plot.h"
#include "ddpm/models/unet.h"
#include "ddpm/resources.h"
#include "ddpm/schedule.h"
#include "ddpm/serve/generation.h"
#include "ddpm/store/model.h"
#include "ddpm/train/run.h"
#include "support.h"

using namespace ddpm;

namespace {

/// Sets DDPM_MEMORY_LIMIT for one scope.
struct MemoryLimit {
  explicit MemoryLimit(const char* v) { ::setenv("DDPM_MEMORY_LIMIT", v, 1); }
  ~MemoryLimit() { ::unsetenv("DDPM_MEMORY_LIMIT"); }
};

uint64_t meminfo(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string k;
  uint64_t v = 0;
  std::string unit;
  while (in >> k >> v >> unit)
    if (k == key + ":") return v * 1024;
  return 0;
}

}  // namespace

TEST(Resources, AvailableMemoryIsAtMostTheMachinesTotal) {
  ::unsetenv("DDPM_MEMORY_LIMIT");
  const uint64_t total = meminfo("MemTotal");
  if (total == 0) GTEST_SKIP() << "no /proc/meminfo";
  const uint64_t a = available_memory();
  EXPECT_GT(a, 0u);
  EXPECT_LE(a, total);
  // Within what /proc/meminfo said a moment apart (other processes move it a little).
  const double m = static_cast<double>(meminfo("MemAvailable"));
  if (a == static_cast<uint64_t>(m) || m == 0) return;
  EXPECT_LE(static_cast<double>(a), m * 1.05 + 64e6);
}

TEST(Resources, TheEnvironmentOverrideTakesSuffixes) {
  {
    MemoryLimit l("3G");
    EXPECT_EQ(available_memory(), uint64_t{3} << 30);
  }
  {
    MemoryLimit l("1.5k");
    EXPECT_EQ(available_memory(), 1536u);
  }
  {
    MemoryLimit l("12345");
    EXPECT_EQ(available_memory(), 12345u);
  }
  {
    MemoryLimit l("lots");  // unreadable: the machine's own figure
    ::unsetenv("DDPM_MEMORY_LIMIT");
    const uint64_t machine = available_memory();
    ::setenv("DDPM_MEMORY_LIMIT", "lots", 1);
    EXPECT_NEAR(static_cast<double>(available_memory()), static_cast<double>(machine), 256e6);
  }
}

TEST(Resources, BytesAreFormattedInBinaryUnits) {
  EXPECT_EQ(format_bytes(1), "1 byte");
  EXPECT_EQ(format_bytes(1023), "1023 bytes");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(300.0 * 1024 * 1024), "300 MiB");
  EXPECT_EQ(format_bytes(2.5 * 1024 * 1024 * 1024), "2.5 GiB");
  EXPECT_EQ(bytes_of(1000, 1000, 1000), 1000000000u);
  EXPECT_EQ(bytes_of(uint64_t{1} << 40, uint64_t{1} << 40), std::numeric_limits<uint64_t>::max());  // saturates
}

TEST(Resources, RequireMemorySaysWhatItNeedsAndWhatThereIs) {
  MemoryLimit l("1M");
  EXPECT_NO_THROW(require_memory(1 << 20, "exactly the limit"));
  try {
    require_memory(uint64_t{3} << 30, "a job", "give a smaller batch", "batch");
    ADD_FAILURE() << "3 GiB accepted under a 1 MiB limit";
  } catch (const OutOfMemory& e) {
    EXPECT_EQ(std::string(e.what()), "a job needs about 3.0 GiB of memory; this machine has 1.0 MiB available (give a smaller batch)");
    EXPECT_EQ(e.field(), "batch");
  }
}

TEST(Resources, AScheduleTooLongForTheMachineIsRefusedUpFront) {
  MemoryLimit l("1M");
  // 256 bytes per step: 4000 steps fit in 1 MiB, 5000 do not.
  EXPECT_NO_THROW(Schedule::make(BetaSchedule::linear, 4000));
  try {
    Schedule::make(BetaSchedule::linear, 5000);
    ADD_FAILURE() << "accepted";
  } catch (const OutOfMemory& e) {
    EXPECT_EQ(e.field(), "timesteps");
    EXPECT_NE(std::string(e.what()).find("1.2 MiB"), std::string::npos) << e.what();
  }
}

TEST(Resources, AGenerationIsRefusedByItsBatchAndItsCount) {
  auto m = open_model("gaussian:mean=0,std=1,dim=1000");
  GenerationRequest r;
  r.sampler.name = "ddim";
  r.sampler.steps = 2;
  r.num = 10000;
  r.batch = 100;
  // Every item's x_T and result (2 · 4 bytes · 1000 · 10000 = 80 MB) and one batch's working set.
  const uint64_t need = r.memory(m);
  EXPECT_GE(need, 80000000u);
  EXPECT_LT(need, 80000000u + 100u * 1000 * 4 * 64);
  r.batch = 1000;
  EXPECT_GT(r.memory(m), need);  // a bigger batch needs more
  MemoryLimit l("60M");
  try {
    generate(m, r);
    ADD_FAILURE() << "accepted";
  } catch (const OutOfMemory& e) {
    EXPECT_EQ(e.field(), "batch");
    EXPECT_NE(std::string(e.what()).find("generating 10000 items in batches of 1000"), std::string::npos) << e.what();
  }
  r.num = 10;
  EXPECT_EQ(generate(m, r).size(0), 10);
}

TEST(Resources, TheUNetsMemoryPerItemComesFromItsStructure) {
  // A sampling forward pass keeps the skips plus a few tensors of the largest size; a training step keeps every
  // layer's activations besides: per image, training needs several times what sampling does, and without attention
  // (whose scores grow with the pixels squared) both scale with the pixels exactly.
  auto o = test::tiny_unet_options();
  o.mid_attention = false;
  UNet net(o);
  const double inf = net.memory_per_item(false), train = net.memory_per_item(true);
  EXPECT_GT(inf, 4.0 * 16 * 16 * 8);  // at least one feature map of the first level
  EXPECT_GT(train, 2 * inf);
  o.image_size = 32;
  UNet big(o);
  EXPECT_DOUBLE_EQ(big.memory_per_item(false) / inf, 4.0);
  EXPECT_DOUBLE_EQ(big.memory_per_item(true) / train, 4.0);
}

TEST(Resources, AnImageSetTooLargeForTheMachineIsRefusedBeforeItIsDecoded) {
  // Three 64×64 grey PNGs. Reading them needs 3 · 64·64 · 2·3 = 73,728 bytes (decoded pixels and the stacked set);
  // training on them needs 3 · 64·64 · 2·4 = 98,304 bytes more for the set in floating point.
  const auto dir = std::filesystem::temp_directory_path() / ("ddpm_test_resources_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::vector<uint8_t> px(64 * 64, 128);
  for (int i = 0; i < 3; ++i)
    std::ofstream(dir / ("im" + std::to_string(i) + ".png"), std::ios::binary) << encode_png(px.data(), 64, 64, 1);
  {
    MemoryLimit limit("70K");
    try {
      (void)read_image_folder(dir.string());
      ADD_FAILURE() << "no OutOfMemory";
    } catch (const OutOfMemory& e) {
      EXPECT_EQ(e.field(), "data");
      EXPECT_NE(std::string(e.what()).find("reading 3 images of 64×64 needs about 72 KiB"), std::string::npos) << e.what();
    }
  }
  {
    MemoryLimit limit("80K");  // enough to read them, not to hold them in floating point
    EXPECT_EQ(read_image_folder(dir.string()).size(), 3);
    DataSource src;
    src.spec = "folder:" + dir.string();
    try {
      (void)load_training_data(src);
      ADD_FAILURE() << "no OutOfMemory";
    } catch (const OutOfMemory& e) {
      EXPECT_EQ(e.field(), "data");
      EXPECT_NE(std::string(e.what()).find("the 3 training images in floating point needs about 96 KiB"), std::string::npos)
          << e.what();
    }
  }
  MemoryLimit limit("1M");
  DataSource source;
  source.spec = "folder:" + dir.string();
  EXPECT_EQ(load_training_data(source).x.size(0), 3);
  std::filesystem::remove_all(dir);
}

// Faults during training, as a user meets them: a kill in the middle of a checkpoint write, a full disk, a diverging
// loss, a data file that vanishes. Each leaves a loadable last checkpoint and one line saying what happened.
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <thread>

#include "cli_support.h"
#include "ddpm/io/npy.h"
#include "ddpm/io/safetensors.h"
#include "ddpm/store/checkpoint.h"
#include "support.h"

extern char** environ;

using namespace ddpm::test;

namespace {

namespace fs = std::filesystem;

const std::string kTiny = " --hidden 16 --blocks 1 --batch 64 --data-size 2000 ";

/// Starts `ddpm --threads 1 ARGS` in the background.
pid_t spawn_cli(const std::string& args) {
  std::vector<std::string> words = {DDPM_CLI, "--threads", "1"};
  std::istringstream ss(args);
  for (std::string w; ss >> w;) words.push_back(w);
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, DDPM_CLI, nullptr, nullptr, argv.data(), environ), 0);
  return pid;
}

bool all_finite(const ddpm::SafeTensors& st) {
  for (const auto& [name, t] : st.tensors)
    if (t.is_floating_point() && !t.isfinite().all().item<bool>()) return false;
  return true;
}

std::vector<std::string> partial_files(const std::string& out) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(out))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) v.push_back(e.path().string());
  return v;
}

/// A small tmpfs mounted for one test (root only) and unmounted however the test ends.
struct SmallDisk {
  std::string path;
  bool ok = false;
  explicit SmallDisk(const std::string& p, const std::string& size) : path(p) {
    fs::create_directories(path);
    ok = ::geteuid() == 0 && ::mount("tmpfs", path.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
  }
  ~SmallDisk() {
    if (ok) ::umount(path.c_str());
  }
};

}  // namespace

TEST(Faults, KillDuringACheckpointWriteKeepsTheLastCheckpointAndResumesExactly) {
  const std::string out = dir() + "/kill_mid_write";
  // A checkpoint every step, so that a write is in flight most of the time; the kill comes the moment one is seen.
  const pid_t pid = spawn_cli("train -q --steps 100000 --checkpoint-every 1 --seed 4" + kTiny + "--out " + out);
  ASSERT_GT(pid, 0);
  const std::string ckpt = out + "/checkpoint.safetensors";
  bool caught = false;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!caught && std::chrono::steady_clock::now() < give_up) {
    std::error_code ec;
    if (fs::exists(ckpt, ec))
      for (const auto& e : fs::directory_iterator(out, ec))
        if (e.path().filename().string().rfind("checkpoint.safetensors.tmp.", 0) == 0) caught = true;
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(caught) << "no checkpoint write was seen in flight";
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  auto st = ddpm::load_train_state(ckpt);  // the previous checkpoint, whole
  const int64_t at_kill = st.meta.at("step").get<int64_t>();
  std::printf("killed while writing the checkpoint after step %lld\n", static_cast<long long>(at_kill));

  // Resuming removes the cut-short temporary file and lands on the bytes of an uninterrupted run.
  const std::string steps = " --steps " + std::to_string(at_kill + 10);
  auto r = run("train -q --resume" + steps + " --out " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(partial_files(out).empty());
  const std::string straight = dir() + "/kill_mid_write_straight";
  auto s = run("train -q --seed 4" + steps + kTiny + "--out " + straight);
  ASSERT_EQ(s.code, 0) << s.output;
  auto x = ddpm::load_safetensors(straight + "/checkpoint.safetensors");
  auto y = ddpm::load_safetensors(ckpt);
  for (const auto& [name, t] : x.tensors) EXPECT_TRUE(y.at(name).equal(t)) << name << " differs after resuming";
}

TEST(Faults, FullDiskWhileWritingACheckpointKeepsTheOldOneAndSaysSo) {
  // The tiny model's state is 62.5 KB: one checkpoint fits in 96 KiB, the next one's temporary copy beside it not.
  SmallDisk disk(dir() + "/small_disk", "96k");
  if (!disk.ok) GTEST_SKIP() << "mounting a tmpfs needs root";
  const std::string out = disk.path + "/run";
  auto r = run("train -q --steps 40 --checkpoint-every 20 --seed 5" + kTiny + "--out " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count_lines(r.output), 1) << r.output;
  EXPECT_EQ(r.output.rfind("ddpm: error: cannot write '" + out + "/checkpoint.safetensors': No space left on device", 0),
            0u)
      << r.output;
  auto st = ddpm::load_train_state(out + "/checkpoint.safetensors");
  EXPECT_EQ(st.meta.at("step").get<int64_t>(), 20);
  EXPECT_TRUE(partial_files(out).empty()) << "the failed write's temporary file is removed";
  // Moved to a disk with room, the run goes on.
  const std::string moved = dir() + "/full_disk_moved";
  fs::remove_all(moved);
  fs::copy(out, moved);
  auto resumed = run("train -q --resume --out " + moved);
  EXPECT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_EQ(ddpm::load_train_state(moved + "/checkpoint.safetensors").meta.at("step").get<int64_t>(), 40);
}

TEST(Faults, DivergingLossStopsWithOneLineAndNoNonFiniteCheckpoint) {
  // A learning rate of 1e30 makes the first Adam update ±1e30 per weight: the next forward pass overflows.
  const std::string out = dir() + "/diverge";
  auto r = run("train -q --lr 1e30 --steps 50 --checkpoint-every 1 --seed 6" + kTiny + "--out " + out);
  EXPECT_NE(r.code, 0);
  ASSERT_EQ(count_lines(r.output), 1) << r.output;
  const std::string head = "ddpm: error: training diverged at step ";
  ASSERT_EQ(r.output.rfind(head, 0), 0u) << r.output;
  const int64_t bad = std::stoll(r.output.substr(head.size()));
  EXPECT_NE(r.output.find("still holds the last checkpoint"), std::string::npos) << r.output;
  auto st = ddpm::load_safetensors(out + "/checkpoint.safetensors");
  EXPECT_EQ(st.metadata.at("step"), std::to_string(bad - 1)) << "the last finite step's checkpoint";
  EXPECT_TRUE(all_finite(st));
  // The same run from its start with a sane rate (a resumed run may take a new --lr) trains on.
  auto ok = run("train -q --steps 30 --seed 6" + kTiny + "--out " + out + "_sane");
  ASSERT_EQ(ok.code, 0) << ok.output;
  auto lowered = run("train -q --resume --lr 1e-4 --steps 35 --out " + out + "_sane");
  ASSERT_EQ(lowered.code, 0) << lowered.output;
  auto meta = ddpm::load_train_state(out + "_sane/checkpoint.safetensors").meta;
  EXPECT_EQ(meta.at("step").get<int64_t>(), 35);
  EXPECT_DOUBLE_EQ(meta.at("train").at("lr").get<double>(), 1e-4) << meta.dump();
}

TEST(Faults, DataFileVanishingMidRunDoesNotStopItAndResumingSaysWhichFile) {
  // Training data is read once, at the start: deleting the file mid-run changes nothing until the next start.
  const std::string d = dir() + "/vanish";
  fs::create_directories(d);
  ddpm::write_npy(d + "/points.npy", at::randn({2000, 2}, ddpm::test::gen(7)));
  const pid_t pid = spawn_cli("train -q --steps 1500 --checkpoint-every 25 --hidden 16 --blocks 1 --batch 64 --data " + d +
                              "/points.npy --out " + d + "/run");
  ASSERT_GT(pid, 0);
  const std::string ckpt = d + "/run/checkpoint.safetensors";
  for (int i = 0; i < 60000 && !fs::exists(ckpt); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  fs::remove(d + "/points.npy");
  const int64_t when = ddpm::load_train_state(ckpt).meta.at("step").get<int64_t>();
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_LT(when, 1500) << "the file went away mid-run";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(ddpm::load_train_state(ckpt).meta.at("step").get<int64_t>(), 1500);
  expect_one_line_error("train --resume --steps 1600 --out " + d + "/run", "points.npy");
}

TEST(Faults, WorkTooBigForTheMachineIsRefusedUpFrontWithWhatItNeeds) {
  // Each of these once ran into the allocator or the kernel: now one line, before any work, naming the setting.
  expect_one_line_error("schedule -T 10000000000 --json", "needs about 2.3 TiB of memory");
  expect_one_line_error("schedule -T 10000000000 --json", "use fewer --timesteps");
  expect_one_line_error("sample -m gaussian:mean=0,std=1,dim=1000000 -n 100000000", "items in batches of 250 needs about");
  expect_one_line_error("sample -m gaussian:mean=0,std=1,dim=1000000 -n 100000000", "give a smaller --batch");
  const std::string model = std::string(DDPM_SOURCE_DIR) + "/models/fashion-mnist.safetensors";
  ::setenv("DDPM_MEMORY_LIMIT", "2G", 1);  // the machine's memory, as the check sees it (children inherit it)
  expect_one_line_error("sample -m " + model + " -n 2000 --batch 2000 --steps 2", "this machine has 2.0 GiB available");
  expect_one_line_error("train --preset fashion-mnist --batch 4096 --steps 1 --out " + dir() + "/big",
                        "a training step with batches of 4096 needs about");
  ::unsetenv("DDPM_MEMORY_LIMIT");
}

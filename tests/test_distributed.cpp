// Data-parallel training: the environment contract, the collectives against a direct computation, sharding, and
// the CLI as a user meets it — two processes equal one with twice the batch, SIGKILL and resume, a dead rank, and
// one clear line for each rendezvous mistake.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "ddpm/data/images.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/io/safetensors.h"
#include "ddpm/train/distributed.h"
#include "ddpm/train/loader.h"
#include "cli_support.h"
#include "support.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

using ddpm::test::count_lines;
using ddpm::test::Result;

/// Runs the CLI with extra environment variables ("A=1 B=2 ").
Result run(const std::string& env, const std::string& args) {
  return ddpm::test::shell("env " + env + " " + std::string(DDPM_CLI) + " " + args + " 2>&1");
}

std::string dir() {
  static const std::string d = [] {
    auto p = fs::temp_directory_path() / ("ddpm_test_dist_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

/// Starts the CLI in its own process group with `env` added, stderr (and stdout) to `log`.
pid_t spawn(const std::vector<std::string>& env_add, const std::string& args, const std::string& log) {
  std::vector<std::string> argv_s = {DDPM_CLI};
  std::istringstream ss(args);
  for (std::string w; ss >> w;) argv_s.push_back(w);
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) env_s.push_back(*e);
  env_s.insert(env_s.end(), env_add.begin(), env_add.end());
  std::vector<char*> argv, envp;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&at, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, DDPM_CLI, &fa, &at, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  EXPECT_EQ(rc, 0);
  return pid;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

/// Waits until `path` exists (files here are written atomically, so it is complete); false after 10 minutes.
bool wait_for_file(const std::string& path) {
  for (int i = 0; i < 60000; ++i) {
    if (fs::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

/// A labelled folder of random 8×8 grey images (classes a and b, `per_class` each) under d/data, and the train
/// arguments of a tiny conditional U-Net on it.
std::string tiny_unet_on_folder(const std::string& d, int64_t per_class, uint64_t seed) {
  fs::create_directories(d + "/data/a");
  fs::create_directories(d + "/data/b");
  auto g = ddpm::test::gen(seed);
  ddpm::save_images(d + "/data/a/a_", at::rand({per_class, 1, 8, 8}, g) * 2 - 1);
  ddpm::save_images(d + "/data/b/b_", at::rand({per_class, 1, 8, 8}, g) * 2 - 1);
  return "train -q --data folder:" + d + "/data --conditional --channels 8 --channel-mult 1,2 --attention 4 "
         "--res-blocks 1 --groups 4 --timesteps 50 ";
}

/// Every tensor of two checkpoints agrees to float tolerance.
void expect_same_weights(const std::string& a, const std::string& b, double tol) {
  auto x = ddpm::load_safetensors(a);
  auto y = ddpm::load_safetensors(b);
  EXPECT_EQ(x.metadata.at("step"), y.metadata.at("step"));
  int compared = 0;
  for (const auto& [name, t] : x.tensors) {
    if (name.rfind("model.", 0) != 0 && name.rfind("ema.", 0) != 0 && name.rfind("optim.", 0) != 0) continue;
    const double scale = std::max(1.0, t.abs().max().item<double>());
    EXPECT_LE(ddpm::test::max_abs_diff(t, y.at(name)), tol * scale) << name;
    ++compared;
  }
  EXPECT_GT(compared, 10);
}

}  // namespace

TEST(DistributedEnv, ReadsTheConventionalVariables) {
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("MASTER_ADDR");
  ::unsetenv("MASTER_PORT");
  auto e = ddpm::distributed_env_from_environment();
  EXPECT_FALSE(e.enabled());
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  ::setenv("WORLD_SIZE", "4", 1);
  EXPECT_THROW(ddpm::distributed_env_from_environment(), ddpm::InvalidArgument);  // RANK missing
  ::setenv("RANK", "3", 1);
  ::setenv("MASTER_ADDR", "node7", 1);
  ::setenv("MASTER_PORT", "1234", 1);
  e = ddpm::distributed_env_from_environment();
  EXPECT_TRUE(e.enabled());
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.master_port, 1234);
  ::setenv("RANK", "4", 1);
  EXPECT_THROW(ddpm::distributed_env_from_environment(), ddpm::InvalidArgument);
  ::setenv("RANK", "1", 1);
  ::setenv("MASTER_PORT", "70000", 1);
  EXPECT_THROW(ddpm::distributed_env_from_environment(), ddpm::InvalidArgument);
  ::setenv("MASTER_PORT", "12x", 1);
  EXPECT_THROW(ddpm::distributed_env_from_environment(), ddpm::InvalidArgument);
  for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(v);
}

TEST(BatchLoader, RanksSplitTheGlobalBatchAndCoverEachEpochOnce) {
  const int64_t N = 96, B = 8, W = 3;
  auto data = at::arange(N, at::TensorOptions().dtype(at::kFloat)).view({N, 1});
  ddpm::BatchLoader one(data, {}, B * W, 5, false);
  std::vector<std::unique_ptr<ddpm::BatchLoader>> ranks;
  for (int r = 0; r < W; ++r) ranks.push_back(std::make_unique<ddpm::BatchLoader>(data, at::Tensor(), B, 5, false, r, W));
  EXPECT_EQ(ranks[0]->batches_per_epoch(), N / (B * W));
  std::vector<int> seen(N, 0);
  for (int64_t step = 0; step < ranks[0]->batches_per_epoch(); ++step) {
    std::vector<at::Tensor> parts;
    for (int r = 0; r < W; ++r) parts.push_back(ranks[r]->make(step).x);
    auto global = at::cat(parts);
    EXPECT_TRUE(global.equal(one.make(step).x)) << "step " << step;
    for (int64_t i = 0; i < global.size(0); ++i) ++seen[static_cast<int64_t>(global[i][0].item<float>())];
  }
  for (int64_t i = 0; i < N; ++i) EXPECT_EQ(seen[i], 1) << "example " << i;
}

TEST(Communicator, TwoRanksAverageAndBroadcastLikeADirectComputation) {
  if (!ddpm::distributed_available()) GTEST_SKIP() << "built without Gloo";
  const int port = free_port();
  auto g = ddpm::test::gen(4);
  // Per-rank gradients of mixed shapes (one undefined) and their mean, computed directly.
  std::vector<std::vector<at::Tensor>> grads(2);
  for (int r = 0; r < 2; ++r)
    grads[r] = {at::randn({3, 5}, g), at::Tensor(), at::randn({7}, g), at::randn({2, 2, 2}, g), at::randn({1}, g)};
  std::vector<at::Tensor> expected;
  for (size_t i = 0; i < grads[0].size(); ++i)
    expected.push_back(grads[0][i].defined() ? ((grads[0][i].to(at::kDouble) + grads[1][i].to(at::kDouble)) / 2)
                                             : at::Tensor());
  std::vector<at::Tensor> bcast = {at::full({4}, 1.0f), at::full({4}, 2.0f)};
  std::vector<std::string> errors(2);
  auto body = [&](int r) {
    try {
      ddpm::DistributedEnv env;
      env.rank = r;
      env.world_size = 2;
      env.master_port = port;
      ddpm::CommunicatorOptions o;
      o.timeout = std::chrono::seconds(60);
      auto comm = ddpm::connect_communicator(env, o);
      EXPECT_EQ(comm->rank(), r);
      EXPECT_EQ(comm->world_size(), 2);
      ddpm::allreduce_mean(*comm, grads[r], /*bucket_bytes=*/64);  // several buckets
      std::vector<at::Tensor> mine = {bcast[r].clone()};
      comm->broadcast(mine, 0);
      bcast[r] = mine[0];
      comm->barrier();
    } catch (const std::exception& e) {
      errors[r] = e.what();
    }
  };
  std::thread t0(body, 0), t1(body, 1);
  t0.join();
  t1.join();
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");
  for (int r = 0; r < 2; ++r)
    for (size_t i = 0; i < expected.size(); ++i) {
      if (!expected[i].defined()) {
        EXPECT_FALSE(grads[r][i].defined());
        continue;
      }
      EXPECT_LT(ddpm::test::max_abs_diff(grads[r][i], expected[i]), 1e-6) << "rank " << r << " tensor " << i;
    }
  EXPECT_TRUE(bcast[1].equal(at::full({4}, 1.0f)));
}

// The toy MLP with every random draw of the step in play: labels dropped for guidance, importance-sampled
// timesteps (T = 50, so the sampler warms up within the run), and the noise.
const std::string kToy =
    "train -q --data toy:8gaussians --data-size 2000 --conditional --hidden 32 --blocks 1 --timesteps 50 "
    "--timestep-sampler loss-second-moment --seed 11 ";

TEST(DistributedCli, TwoProcessesEqualOneWithTwiceTheBatch) {
  if (!ddpm::distributed_available()) GTEST_SKIP() << "built without Gloo";
  const std::string one = dir() + "/one", two = dir() + "/two";
  auto a = run("", "--threads 1 " + kToy + "--steps 40 --batch 64 --out " + one);
  ASSERT_EQ(a.code, 0) << a.output;
  auto b = run("", "--threads 2 launch --nproc 2 -- " + kToy + "--steps 40 --batch 32 --out " + two);
  ASSERT_EQ(b.code, 0) << b.output;
  expect_same_weights(one + "/checkpoint.safetensors", two + "/checkpoint.safetensors", 1e-4);
  // The importance sampler saw the same losses on both.
  auto x = ddpm::load_safetensors(one + "/checkpoint.safetensors");
  auto y = ddpm::load_safetensors(two + "/checkpoint.safetensors");
  EXPECT_LT(ddpm::test::max_abs_diff(x.at("timestep_sampler.state"), y.at("timestep_sampler.state")), 1e-4);
  // Only rank 0 writes: one metrics line per logged step.
  EXPECT_EQ(count_lines(slurp(two + "/metrics.jsonl")), count_lines(slurp(one + "/metrics.jsonl")));
}

TEST(DistributedCli, ImagesWithFlipsTwoProcessesEqualOne) {
  if (!ddpm::distributed_available()) GTEST_SKIP() << "built without Gloo";
  // A tiny U-Net without dropout on a folder of random 8×8 images, with random flips and label dropout.
  const std::string d = dir() + "/img";
  const std::string args = tiny_unet_on_folder(d, 12, 2) + "--random-flip --dropout 0 --steps 6 ";
  auto a = run("", "--threads 1 " + args + "--batch 8 --out " + d + "/one");
  ASSERT_EQ(a.code, 0) << a.output;
  auto b = run("", "--threads 2 launch --nproc 2 -- " + args + "--batch 4 --out " + d + "/two");
  ASSERT_EQ(b.code, 0) << b.output;
  expect_same_weights(d + "/one/checkpoint.safetensors", d + "/two/checkpoint.safetensors", 1e-4);
}

TEST(DistributedCli, KilledTwoProcessRunResumesAndContinuesCorrectly) {
  if (!ddpm::distributed_available()) GTEST_SKIP() << "built without Gloo";
  const std::string killed = dir() + "/killed", straight = dir() + "/straight";
  const std::string log = dir() + "/killed.log";
  // A long run, SIGKILLed (launcher and both ranks) once it has written a checkpoint.
  pid_t pid = spawn({}, "--threads 2 launch --nproc 2 -- " + kToy + "--steps 1000000 --batch 32 --checkpoint-every 20 "
                        "--out " + killed, log);
  const std::string ckpt = killed + "/checkpoint.safetensors";
  ASSERT_TRUE(wait_for_file(ckpt)) << "no checkpoint appeared";
  ::kill(-pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  auto st = ddpm::load_train_state(ckpt);  // loadable, whenever the kill came
  const int64_t at_kill = st.meta.at("step").get<int64_t>();
  EXPECT_GE(at_kill, 20);
  EXPECT_LT(at_kill, 1000000);
  const std::string total = std::to_string(at_kill + 30);
  auto r = run("", "--threads 2 launch --nproc 2 -- train -q --resume --steps " + total + " --out " + killed);
  ASSERT_EQ(r.code, 0) << r.output;
  auto s = run("", "--threads 2 launch --nproc 2 -- " + kToy + "--steps " + total + " --batch 32 --out " + straight);
  ASSERT_EQ(s.code, 0) << s.output;
  expect_same_weights(straight + "/checkpoint.safetensors", ckpt, 1e-5);
}

TEST(DistributedCli, WhenOneRankDiesTheOtherStopsWithOneLine) {
  if (!ddpm::distributed_available()) GTEST_SKIP() << "built without Gloo";
  const std::string out = dir() + "/dies";
  const std::string port = "MASTER_PORT=" + std::to_string(free_port());
  const std::string args = "--threads 1 " + kToy + "--steps 1000000 --batch 32 --checkpoint-every 20 --out " + out;
  pid_t r0 = spawn({"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", port}, args + " --dist-timeout 120",
                   dir() + "/r0.log");
  pid_t r1 = spawn({"RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", port}, args + " --dist-timeout 120",
                   dir() + "/r1.log");
  ASSERT_TRUE(wait_for_file(out + "/checkpoint.safetensors")) << "no checkpoint appeared";
  ::kill(r1, SIGKILL);
  ::waitpid(r1, nullptr, 0);
  int status = 0;
  ::waitpid(r0, &status, 0);  // it must stop by itself
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = slurp(dir() + "/r0.log");
  EXPECT_EQ(count_lines(err), 1) << err;
  EXPECT_EQ(err.rfind("ddpm: error: rank 0 lost contact", 0), 0u) << err;
  EXPECT_NE(err.find("--resume"), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(out + "/checkpoint.safetensors"));
}

TEST(DistributedCli, RendezvousMistakesGiveOneClearLine) {
  if (!ddpm::distributed_available()) GTEST_SKIP() << "built without Gloo";
  const std::string args = "--threads 1 " + kToy + "--steps 5 --batch 8 --dist-timeout 3 --out " + dir() + "/mistake";
  auto expect_line = [](const Result& r, const std::string& needle) {
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(count_lines(r.output), 1) << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.output;
    EXPECT_EQ(r.output.find("terminate"), std::string::npos) << r.output;
  };
  // WORLD_SIZE says 2, only one process was started.
  expect_line(run("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()), args),
              "WORLD_SIZE=2");
  // The port is taken by someone else.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof addr;
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(fd, 4), 0);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    expect_line(run("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(ntohs(addr.sin_port)), args),
                "in use");
    ::close(fd);
  }
  // An address that does not resolve.
  expect_line(run("RANK=1 WORLD_SIZE=2 MASTER_ADDR=no-such-host.invalid MASTER_PORT=29511", args), "MASTER_ADDR");
  // A rank outside the world.
  expect_line(run("RANK=2 WORLD_SIZE=2", args), "RANK=2 is not below WORLD_SIZE=2");
  // launch without a command.
  expect_line(run("", "launch --nproc 2"), "give the command after --");
}

TEST(DistributedCli, ResumingATwoProcessRunWithDropoutIsExact) {
  if (!ddpm::distributed_available()) GTEST_SKIP() << "built without Gloo";
  // Dropout masks depend only on (seed, step, rank), so stopping and resuming changes nothing.
  const std::string d = dir() + "/dropout";
  const std::string args = tiny_unet_on_folder(d, 8, 3) + "--dropout 0.3 --batch 4 ";
  auto a = run("", "--threads 2 launch --nproc 2 -- " + args + "--steps 6 --out " + d + "/straight");
  ASSERT_EQ(a.code, 0) << a.output;
  auto b = run("", "--threads 2 launch --nproc 2 -- " + args + "--steps 3 --out " + d + "/halves");
  ASSERT_EQ(b.code, 0) << b.output;
  auto c = run("", "--threads 2 launch --nproc 2 -- train -q --resume --steps 6 --out " + d + "/halves");
  ASSERT_EQ(c.code, 0) << c.output;
  expect_same_weights(d + "/straight/checkpoint.safetensors", d + "/halves/checkpoint.safetensors", 0);
}

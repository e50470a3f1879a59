// ddpm launch: starts N copies of a ddpm command on this machine as one data-parallel job (what torchrun does),
// with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set for each.
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"

extern char** environ;

namespace ddpm::cli {
namespace {

std::atomic<int> g_signal{0};
void on_launch_signal(int sig) { g_signal = sig; }

/// A port the kernel reports free on the loopback interface now.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw IoError("cannot open a socket to find a free port: " + std::string(std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  if (port <= 0) throw IoError("cannot find a free port; give one with --master-port");
  return port;
}

struct LaunchArgs {
  int nproc = 2;
  int port = 0;
  double grace = 30;
  std::vector<std::string> command;
};

void run_launch(const LaunchArgs& a) {
  if (a.command.empty())
    throw InvalidArgument("give the command after --, e.g. ddpm launch --nproc 2 -- train --preset fashion-mnist");
  if (a.command.front() == "launch") throw InvalidArgument("ddpm launch cannot launch itself");
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const int port = a.port > 0 ? a.port : free_port();
  // Threads: --threads given to launch is the total; otherwise each process takes its share of the cores.
  const int total_threads = global_options().threads > 0
                                ? global_options().threads
                                : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = std::max(1, total_threads / a.nproc);

  std::vector<std::string> base_env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (key == "RANK" || key == "LOCAL_RANK" || key == "WORLD_SIZE" || key == "LOCAL_WORLD_SIZE" ||
        key == "MASTER_ADDR" || key == "MASTER_PORT")
      continue;
    base_env.push_back(kv);
  }
  g_signal = 0;
  auto old_int = std::signal(SIGINT, on_launch_signal);
  auto old_term = std::signal(SIGTERM, on_launch_signal);
  std::vector<pid_t> pids(a.nproc, -1);
  std::vector<int> codes(a.nproc, -1);
  for (int r = 0; r < a.nproc; ++r) {
    std::vector<std::string> env = base_env;
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(a.nproc));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(a.nproc));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<std::string> args = {exe, "--threads", std::to_string(threads)};
    if (global_options().quiet) args.push_back("--quiet");
    args.insert(args.end(), a.command.begin(), a.command.end());
    std::vector<char*> argv, envp;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    const int rc = posix_spawn(&pids[r], exe.c_str(), nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) {
      for (int k = 0; k < r; ++k) ::kill(pids[k], SIGKILL);
      for (int k = 0; k < r; ++k) ::waitpid(pids[k], nullptr, 0);
      throw IoError("cannot start process " + std::to_string(r) + ": " + std::strerror(rc));
    }
  }

  // Wait for all. When one fails, the others normally notice within a collective and stop on their own; whatever
  // still runs after the grace period is killed.
  int running = a.nproc, failed_rank = -1, failed_status = 0;
  bool forwarded = false;
  std::chrono::steady_clock::time_point failed_at;
  while (running > 0) {
    if (g_signal != 0 && !forwarded) {
      for (int r = 0; r < a.nproc; ++r)
        if (codes[r] < 0) ::kill(pids[r], SIGINT);
      forwarded = true;
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < a.nproc; ++r) {
        if (pids[r] != pid) continue;
        codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        --running;
        if (codes[r] != 0 && failed_rank < 0) {
          failed_rank = r;
          failed_status = status;
          failed_at = std::chrono::steady_clock::now();
        }
      }
      continue;
    }
    if (failed_rank >= 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - failed_at).count() > a.grace) {
      for (int r = 0; r < a.nproc; ++r)
        if (codes[r] < 0) ::kill(pids[r], SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  if (failed_rank < 0) return;
  if (WIFSIGNALED(failed_status))
    throw Error("rank " + std::to_string(failed_rank) + " was killed by signal " +
                std::to_string(WTERMSIG(failed_status)) + "; the other ranks were stopped");
  // The failing process has already printed its own one-line error; exit with its code.
  throw SilentExit{codes[failed_rank]};
}

}  // namespace

void register_launch(CLI::App& app) {
  auto a = std::make_shared<LaunchArgs>();
  auto* c = app.add_subcommand(
      "launch", "run a ddpm command as N data-parallel processes on this machine (like torchrun --nproc-per-node N)");
  c->add_option("--nproc,-n", a->nproc, "number of processes")->capture_default_str()->check(CLI::Range(1, 1024));
  c->add_option("--master-port", a->port, "rendezvous port on 127.0.0.1 (default: a free one)")
      ->check(CLI::Range(1, 65535));
  c->add_option("--grace", a->grace, "seconds the other processes get to stop after one fails, before being killed")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("command", a->command, "the ddpm command each process runs, after --")->allow_extra_args();
  c->footer("Example: ddpm launch --nproc 2 -- train --preset fashion-mnist --out runs/fm2\n"
            "--threads given before launch is the total, split between the processes; --batch is per process.\n"
            "For several machines, start `ddpm train` on each with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
            "set (see README).");
  c->callback([a] { run_launch(*a); });
}

}  // namespace ddpm::cli

#include "ddpm/train/distributed.h"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#ifdef DDPM_HAVE_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace ddpm {
namespace {

int env_int(const char* name, int fallback, long lo, long hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi)
    throw InvalidArgument(std::string(name) + "='" + v + "' must be an integer from " + std::to_string(lo) + " to " +
                          std::to_string(hi));
  return static_cast<int>(x);
}

std::string one_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  // c10 errors append a C++ stack trace after "Exception raised from"; keep the message.
  const auto cut = s.find("Exception raised from");
  if (cut != std::string::npos) s.resize(cut);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

bool contains(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

std::string format_seconds(std::chrono::milliseconds ms) {
  char b[32];
  std::snprintf(b, sizeof b, "%g s", ms.count() / 1000.0);
  return b;
}

}  // namespace

DistributedEnv distributed_env_from_environment() {
  DistributedEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  if (e.world_size > 1 && std::getenv("RANK") == nullptr)
    throw InvalidArgument("WORLD_SIZE=" + std::to_string(e.world_size) + " but RANK is not set (give each process "
                          "its rank, 0 to " + std::to_string(e.world_size - 1) + ")");
  e.rank = env_int("RANK", 0, 0, 1 << 20);
  if (e.rank >= e.world_size)
    throw InvalidArgument("RANK=" + std::to_string(e.rank) + " is not below WORLD_SIZE=" + std::to_string(e.world_size));
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, 1, 1 << 20);
  e.local_rank = env_int("LOCAL_RANK", 0, 0, 1 << 20);
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  return e;
}

void allreduce_mean(Communicator& comm, const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  const int world = comm.world_size();
  if (world <= 1) return;
  // Consecutive tensors of one dtype and device share a flat bucket until it holds bucket_bytes.
  std::vector<std::vector<at::Tensor>> groups;
  int64_t bytes = 0;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    const bool fits = !groups.empty() && groups.back().front().scalar_type() == t.scalar_type() &&
                      groups.back().front().device() == t.device() && bytes + static_cast<int64_t>(t.nbytes()) <= bucket_bytes;
    if (!fits) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(t);
    bytes += static_cast<int64_t>(t.nbytes());
  }
  std::vector<at::Tensor> flats;
  flats.reserve(groups.size());
  for (const auto& g : groups) {
    std::vector<at::Tensor> views;
    for (const auto& t : g) views.push_back(t.reshape({-1}));
    flats.push_back(at::cat(views));
  }
  comm.allreduce_sum(flats);
  for (size_t i = 0; i < groups.size(); ++i) {
    flats[i].div_(world);
    int64_t off = 0;
    for (const auto& t : groups[i]) {
      const int64_t n = t.numel();
      t.view({-1}).copy_(flats[i].slice(0, off, off + n));
      off += n;
    }
  }
}

#ifdef DDPM_HAVE_GLOO

namespace {

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(const DistributedEnv& env, const CommunicatorOptions& o) : rank_(env.rank), size_(env.world_size) {
    where_ = env.master_addr + ":" + std::to_string(env.master_port);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = o.timeout;
    const std::string secs = format_seconds(o.timeout);
    const std::string joined = "not every process joined at " + where_ + " within " + secs +
                               ": check that WORLD_SIZE=" + std::to_string(size_) + " processes were started, with "
                               "ranks 0 to " + std::to_string(size_ - 1) + ", and that MASTER_ADDR and MASTER_PORT "
                               "match";
    {
      // A name that does not resolve would only show as a time-out; say so at once.
      addrinfo hints{};
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      const int rc = ::getaddrinfo(env.master_addr.c_str(), nullptr, &hints, &res);
      if (res != nullptr) ::freeaddrinfo(res);
      if (rc != 0)
        throw DistributedError("MASTER_ADDR '" + env.master_addr + "' does not resolve to an address (" +
                               ::gai_strerror(rc) + "): give rank 0's host name or IP address");
    }
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    } catch (const std::exception& e) {
      const std::string m = one_line(e.what());
      if (env.rank == 0 && (contains(m, "in use") || contains(m, "failed to listen") || contains(m, "EADDRINUSE")))
        throw DistributedError("MASTER_PORT " + std::to_string(env.master_port) +
                               " is already in use on this machine; choose a free port with MASTER_PORT (" + m + ")");
      if (contains(m, "Timed out") || contains(m, "timed out") || contains(m, "Timeout") || contains(m, "timeout"))
        throw DistributedError(joined + " (" + m + ")");
      throw DistributedError("cannot reach the rendezvous at MASTER_ADDR:MASTER_PORT = " + where_ +
                             ": check MASTER_ADDR and that rank 0 is running (" + m + ")");
    }
    auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    try {
      if (ifname != nullptr && *ifname != '\0')
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost" || env.master_addr == "::1")
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
      else
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      opts->threads = 2;
      pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, rank_, size_, opts);
    } catch (const std::exception& e) {
      throw DistributedError("rank " + std::to_string(rank_) + ": " + joined + " (" + one_line(e.what()) + ")");
    }
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }

  void allreduce_sum(const std::vector<at::Tensor>& tensors) override {
    run("allreduce", [&] {
      std::vector<c10::intrusive_ptr<c10d::Work>> works;
      std::vector<std::vector<at::Tensor>> args;
      args.reserve(tensors.size());
      for (const auto& t : tensors) {
        args.push_back({t});
        works.push_back(pg_->allreduce(args.back()));
      }
      for (auto& w : works) w->wait();
    });
  }

  void broadcast(const std::vector<at::Tensor>& tensors, int root) override {
    run("broadcast", [&] {
      c10d::BroadcastOptions bo;
      bo.rootRank = root;
      std::vector<c10::intrusive_ptr<c10d::Work>> works;
      std::vector<std::vector<at::Tensor>> args;
      args.reserve(tensors.size());
      for (const auto& t : tensors) {
        args.push_back({t});
        works.push_back(pg_->broadcast(args.back(), bo));
      }
      for (auto& w : works) w->wait();
    });
  }

  void barrier() override {
    run("barrier", [&] { pg_->barrier()->wait(); });
  }

 private:
  template <class F>
  void run(const char* what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      throw DistributedError("rank " + std::to_string(rank_) + " lost contact with the other processes during " + what +
                             " (another rank stopped or the network failed: " + one_line(e.what()) + ")");
    }
  }

  int rank_, size_;
  std::string where_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
};

}  // namespace

bool distributed_available() { return true; }

std::shared_ptr<Communicator> connect_communicator(const DistributedEnv& env, const CommunicatorOptions& options) {
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size)
    throw InvalidArgument("rank " + std::to_string(env.rank) + " does not fit a world of " +
                          std::to_string(env.world_size));
  return std::make_shared<GlooCommunicator>(env, options);
}

#else

bool distributed_available() { return false; }

std::shared_ptr<Communicator> connect_communicator(const DistributedEnv&, const CommunicatorOptions&) {
  throw DistributedError("this build of ddpm has no distributed backend: install libgloo-dev (bash scripts/setup.sh) "
                         "and rebuild");
}

#endif

}  // namespace ddpm

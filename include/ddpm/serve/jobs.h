// Generation jobs for a server on a small machine: a bounded FIFO queue, one worker that runs one generation at a
// time (the batch is the parallelism), a per-job cancel flag checked before every network call, only the latest
// preview frame kept per job (a slow reader skips frames and never slows the sampler), and finished results kept
// for a while. No HTTP here: the server binds requests to these calls, and tests drive them directly.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ddpm/errors.h"
#include "ddpm/serve/generation.h"

namespace ddpm::serve {

enum class JobStatus { queued, running, done, failed, cancelled };
const char* status_name(JobStatus s);
inline bool finished(JobStatus s) { return s == JobStatus::done || s == JobStatus::failed || s == JobStatus::cancelled; }

/// What to run: a model of the catalog by id, the generation, and the request as accepted (echoed back).
struct JobSpec {
  std::string model;
  GenerationRequest request;
  nlohmann::json params = nlohmann::json::object();
  bool cancel_on_disconnect = true;  ///< cancel once every stream reader has been gone for the grace period
};

/// The latest step of a running job: PNG strips of x_t and x̂0 at native size.
struct Frame {
  int64_t step = 0, steps = 0, t = 0;
  double eta_ms = 0;
  std::string xt_png, x0_png;
};

struct JobSnapshot {
  std::string id;
  JobStatus status = JobStatus::queued;
  int64_t queue_position = 0;  ///< 1 = next to run; 0 once running or finished
  int64_t steps = 0;           ///< of the sampler, known once running
  Frame frame;
  std::string message;         ///< why it failed or was cancelled
  std::string cli;             ///< the equivalent `ddpm sample` command
  JobSpec spec;
  int64_t items = 0;
  std::vector<std::string> images;  ///< PNG per item once done (only when asked for)
  std::string grid_png;             ///< all items in one picture, a column per class with every class (only when asked for)
  double seconds = 0;               ///< running time so far
  double started_at = 0;            ///< Unix time it started running (0 before)
  uint64_t version = 0;             ///< rises at every change
};

/// The queue holds max_queue jobs waiting; one more is refused.
class QueueFull : public Error {
 public:
  using Error::Error;
};

struct QueueOptions {
  size_t max_queue = 8;
  size_t keep_results = 32;                          ///< finished jobs kept (oldest dropped first)
  std::chrono::seconds result_ttl{600};              ///< finished jobs dropped after this
  std::chrono::seconds max_job_time{600};            ///< a running job is cancelled after this
  std::chrono::milliseconds disconnect_grace{10000}; ///< cancel_on_disconnect waits this long after the last reader
};

/// The model of an id (loaded or cached by the caller); throws on failure, which fails the job.
using ModelProvider = std::function<std::shared_ptr<const Model>(const std::string& id)>;
/// The command line that repeats a job.
using CommandFn = std::function<std::string(const JobSpec&)>;

class JobQueue {
 public:
  JobQueue(ModelProvider models, CommandFn command, QueueOptions options = {});
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  struct Submitted {
    std::string id;        ///< 128 random bits as 32 hex digits
    int64_t position = 0;  ///< in the queue, 1 = next
  };
  /// Throws QueueFull when max_queue jobs are waiting, Cancelled once stopped.
  Submitted submit(JobSpec spec);

  /// nullopt for an unknown or expired id; images only when `with_images`.
  std::optional<JobSnapshot> get(const std::string& id, bool with_images = false) const;
  /// True for an id that existed and was dropped (results expire).
  bool expired(const std::string& id) const;

  enum class CancelResult { cancelled, not_found, finished };
  /// Cancels a queued job at once, a running one within one network evaluation.
  CancelResult cancel(const std::string& id, const std::string& reason = "cancelled by request");

  /// Blocks until the job's version differs from `seen` or `timeout` passes; returns its version then (0 if gone).
  uint64_t wait(const std::string& id, uint64_t seen, std::chrono::milliseconds timeout) const;

  /// A stream reader arrives or leaves (for cancel_on_disconnect).
  void subscribe(const std::string& id);
  void unsubscribe(const std::string& id);

  /// Jobs waiting, in order, then the running one.
  std::vector<JobSnapshot> queue() const;
  size_t waiting() const;

  /// Cancels every job and joins the worker; later submissions throw Cancelled.
  void stop();

 private:
  struct Job;
  void work();
  void run(const std::shared_ptr<Job>& job);
  void prune_locked();
  JobSnapshot snapshot_locked(const Job& job, bool with_images) const;
  void check_abandoned_locked(Job& job);

  ModelProvider models_;
  CommandFn command_;
  QueueOptions options_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::condition_variable work_ready_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::shared_ptr<Job>> pending_;
  std::deque<std::string> finished_order_;
  std::set<std::string> expired_;
  std::deque<std::string> expired_order_;
  std::shared_ptr<Job> running_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace ddpm::serve

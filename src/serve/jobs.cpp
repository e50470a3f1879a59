#include "ddpm/serve/jobs.h"

#include <c10/core/InferenceMode.h>

#include <atomic>
#include <cmath>
#include <random>

#include "ddpm/data/images.h"

namespace ddpm::serve {

using Clock = std::chrono::steady_clock;

struct JobQueue::Job {
  std::string id;
  JobSpec spec;
  JobStatus status = JobStatus::queued;
  std::atomic<bool> cancel{false};
  std::string cancel_reason;
  Frame frame;
  int64_t steps = 0, items = 0;
  std::string message, cli;
  std::vector<std::string> images;
  std::string grid;
  Clock::time_point started, ended;
  double started_at = 0;
  uint64_t version = 1;
  int subscribers = 0;
  bool had_subscriber = false;
  Clock::time_point last_left;
};

const char* status_name(JobStatus s) {
  switch (s) {
    case JobStatus::queued: return "queued";
    case JobStatus::running: return "running";
    case JobStatus::done: return "done";
    case JobStatus::failed: return "failed";
    case JobStatus::cancelled: return "cancelled";
  }
  return "unknown";
}

namespace {

std::string random_id() {
  static std::mutex m;
  static std::random_device rd;
  std::lock_guard<std::mutex> lock(m);
  static const char* hex = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 4; ++i) {
    uint32_t v = rd();
    for (int k = 0; k < 8; ++k) id += hex[(v >> (4 * k)) & 15];
  }
  return id;
}

/// Items as a picture shows them: with every class, one column per class (item j of each class in row j);
/// otherwise in order, at most 8 per row (preview) or a square (result).
std::pair<at::Tensor, int64_t> layout(const GenerationRequest& r, const at::Tensor& x, bool preview) {
  const int64_t n = x.size(0);
  if (r.per_class && r.num > 0 && n % r.num == 0) {
    const int64_t classes = n / r.num;
    auto sizes = x.sizes().vec();
    sizes[0] = r.num;
    sizes.insert(sizes.begin(), classes);
    return {x.reshape(sizes).transpose(0, 1).reshape(x.sizes()), classes};
  }
  if (preview) return {x, std::min<int64_t>(n, 8)};
  return {x, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))))};
}

std::string picture(const GenerationRequest& r, const at::Tensor& x, bool preview) {
  auto [items, cols] = layout(r, x, preview);
  return encode_image_grid_png(items, cols, 1, preview ? 1 : 2);
}

}  // namespace

JobQueue::JobQueue(ModelProvider models, CommandFn command, QueueOptions options)
    : models_(std::move(models)), command_(std::move(command)), options_(options) {
  worker_ = std::thread([this] { work(); });
}

JobQueue::~JobQueue() { stop(); }

void JobQueue::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    for (auto& j : pending_) {
      j->status = JobStatus::cancelled;
      j->message = "the server is stopping";
      j->ended = Clock::now();
      ++j->version;
    }
    pending_.clear();
    if (running_) {
      running_->cancel_reason = "the server is stopping";
      running_->cancel = true;
    }
  }
  work_ready_.notify_all();
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

JobQueue::Submitted JobQueue::submit(JobSpec spec) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) throw Cancelled("the server is stopping");
  if (pending_.size() >= options_.max_queue)
    throw QueueFull("the queue is full (" + std::to_string(options_.max_queue) + " jobs waiting); try again later");
  prune_locked();
  auto job = std::make_shared<Job>();
  job->id = random_id();
  job->spec = std::move(spec);
  job->cli = command_ ? command_(job->spec) : std::string();
  jobs_[job->id] = job;
  pending_.push_back(job);
  Submitted s{job->id, static_cast<int64_t>(pending_.size())};
  work_ready_.notify_one();
  changed_.notify_all();
  return s;
}

void JobQueue::prune_locked() {
  const auto now = Clock::now();
  auto drop = [&](const std::string& id) {
    jobs_.erase(id);
    if (expired_.insert(id).second) expired_order_.push_back(id);
    while (expired_order_.size() > 4096) {
      expired_.erase(expired_order_.front());
      expired_order_.pop_front();
    }
  };
  while (!finished_order_.empty()) {
    auto it = jobs_.find(finished_order_.front());
    const bool too_many = finished_order_.size() > options_.keep_results;
    const bool too_old = it != jobs_.end() && now - it->second->ended > options_.result_ttl;
    if (it != jobs_.end() && !too_many && !too_old) break;
    drop(finished_order_.front());
    finished_order_.pop_front();
  }
}

JobSnapshot JobQueue::snapshot_locked(const Job& j, bool with_images) const {
  JobSnapshot s;
  s.id = j.id;
  s.status = j.status;
  if (j.status == JobStatus::queued) {
    for (size_t i = 0; i < pending_.size(); ++i)
      if (pending_[i].get() == &j) s.queue_position = static_cast<int64_t>(i) + 1;
  }
  s.steps = j.steps;
  s.frame = j.frame;
  s.message = j.message;
  s.cli = j.cli;
  s.spec = j.spec;
  s.items = j.items;
  if (with_images) {
    s.images = j.images;
    s.grid_png = j.grid;
  }
  if (j.status != JobStatus::queued) {
    auto end = finished(j.status) ? j.ended : Clock::now();
    s.seconds = std::chrono::duration<double>(end - j.started).count();
  }
  s.started_at = j.started_at;
  s.version = j.version;
  return s;
}

std::optional<JobSnapshot> JobQueue::get(const std::string& id, bool with_images) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return snapshot_locked(*it->second, with_images);
}

bool JobQueue::expired(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return expired_.count(id) > 0;
}

JobQueue::CancelResult JobQueue::cancel(const std::string& id, const std::string& reason) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return CancelResult::not_found;
  auto& j = *it->second;
  if (finished(j.status)) return CancelResult::finished;
  if (j.status == JobStatus::queued) {
    for (auto p = pending_.begin(); p != pending_.end(); ++p)
      if (p->get() == &j) {
        pending_.erase(p);
        break;
      }
    j.status = JobStatus::cancelled;
    j.message = reason;
    j.started = j.ended = Clock::now();
    finished_order_.push_back(j.id);
    ++j.version;
    // Everyone behind it moved up one place.
    for (auto& p : pending_) ++p->version;
  } else {
    j.cancel_reason = reason;
    j.cancel = true;
  }
  lock.unlock();
  changed_.notify_all();
  return CancelResult::cancelled;
}

uint64_t JobQueue::wait(const std::string& id, uint64_t seen, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t v = 0;
  changed_.wait_for(lock, timeout, [&] {
    auto it = jobs_.find(id);
    v = it == jobs_.end() ? 0 : it->second->version;
    return v != seen || stopping_;
  });
  return v;
}

void JobQueue::subscribe(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  ++it->second->subscribers;
  it->second->had_subscriber = true;
}

void JobQueue::unsubscribe(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (--it->second->subscribers == 0) it->second->last_left = Clock::now();
}

void JobQueue::check_abandoned_locked(Job& j) {
  if (!j.spec.cancel_on_disconnect || !j.had_subscriber || j.subscribers > 0) return;
  if (Clock::now() - j.last_left < options_.disconnect_grace) return;
  j.cancel_reason = "every client watching it left";
  j.cancel = true;
}

std::vector<JobSnapshot> JobQueue::queue() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobSnapshot> out;
  if (running_) out.push_back(snapshot_locked(*running_, false));
  for (auto& j : pending_) out.push_back(snapshot_locked(*j, false));
  return out;
}

size_t JobQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.size();
}

void JobQueue::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_ready_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      job = pending_.front();
      pending_.pop_front();
      running_ = job;
      job->status = JobStatus::running;
      job->started = Clock::now();
      job->started_at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      ++job->version;
      for (auto& p : pending_) ++p->version;  // moved up
      check_abandoned_locked(*job);
    }
    changed_.notify_all();
    run(job);
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_.reset();
      job->ended = Clock::now();
      finished_order_.push_back(job->id);
      ++job->version;
    }
    changed_.notify_all();
  }
}

void JobQueue::run(const std::shared_ptr<Job>& job) {
  auto set_final = [&](JobStatus s, const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    job->status = s;
    job->message = message;
  };
  try {
    c10::InferenceMode guard;
    if (job->cancel) throw Cancelled(job->cancel_reason);
    auto model = models_(job->spec.model);
    const auto& r = job->spec.request;
    validate_generation(*model, r);
    const int64_t items = r.count(*model);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job->steps = r.sampler.steps_for(model->diffusion);
      job->items = items;
      job->frame.steps = job->steps;
      ++job->version;
    }
    changed_.notify_all();
    GenerationCallbacks cb;
    cb.cancel = &job->cancel;
    cb.on_step = [&](int64_t step, int64_t steps, int64_t t, const at::Tensor& x, const at::Tensor& x0) {
      Frame f;
      f.step = step;
      f.steps = steps;
      f.t = t;
      const double elapsed = std::chrono::duration<double, std::milli>(Clock::now() - job->started).count();
      f.eta_ms = elapsed / static_cast<double>(step) * static_cast<double>(steps - step);
      if (model->is_image()) {
        f.xt_png = picture(r, x, true);
        f.x0_png = picture(r, x0.clamp(-1, 1), true);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        job->frame = std::move(f);
        ++job->version;
        check_abandoned_locked(*job);
        if (Clock::now() - job->started > options_.max_job_time) {
          job->cancel_reason = "it ran longer than the server's limit of " +
                               std::to_string(options_.max_job_time.count()) + " s";
          job->cancel = true;
        }
      }
      changed_.notify_all();
    };
    auto x = generate(*model, r, cb);
    std::vector<std::string> images;
    std::string grid;
    if (model->is_image()) {
      for (int64_t i = 0; i < x.size(0); ++i) images.push_back(encode_image_png(x[i]));
      grid = picture(r, x, false);
    }
    std::lock_guard<std::mutex> lock(mu_);
    job->images = std::move(images);
    job->grid = std::move(grid);
    job->status = JobStatus::done;
  } catch (const Cancelled&) {
    set_final(JobStatus::cancelled, job->cancel_reason.empty() ? "cancelled" : job->cancel_reason);
  } catch (const std::exception& e) {
    set_final(JobStatus::failed, e.what());
  }
}

}  // namespace ddpm::serve

// The HTTP API of `ddpm serve`, without the transport: a request in, a response out (or a stream of Server-Sent
// Events to pull). Every rule lives here — routes, the JSON request's strict validation, status codes, the API
// key, Host and Origin checks, CORS, limits — so that tests drive it directly and the server binary only copies
// requests and responses between this and its HTTP library. docs/API.md has the routes and their JSON shapes.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ddpm/serve/catalog.h"
#include "ddpm/serve/jobs.h"

namespace ddpm::serve {

struct HttpRequest {
  std::string method;                          ///< "GET", "POST", ...
  std::string path;                            ///< decoded, without the query
  std::map<std::string, std::string> headers;  ///< names in lower case
  std::string body;
};

class EventStream;

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  /// Set for an event stream: the transport sends `content_type` (text/event-stream) and pulls chunks from it.
  std::shared_ptr<EventStream> stream;
};

/// A file of the page.
struct Asset {
  std::string content_type;
  std::string body;
};

struct ServiceOptions {
  std::string host = "127.0.0.1";  ///< where the server listens (loopback: Host headers are checked)
  int port = 0;                    ///< the bound port, for the Host check (0: any port)
  std::string api_key;             ///< required as "Authorization: Bearer KEY" on /v1/ when set
  std::string cors_origin;         ///< the one Origin allowed to call from another page; none when empty
  int64_t max_batch = 16;          ///< items per job (per class when every class is asked for)
  int64_t max_steps = 1000;        ///< sampler steps per job (and at most the model's T)
  int64_t max_calls = 20000;       ///< network calls per job (guidance counts twice, Langevin its steps per level)
  size_t max_streams = 8;          ///< event streams open at once (503 beyond)
  size_t max_body = 256 * 1024;    ///< request body bytes (413 beyond; images to edit travel in the body)
  int threads = 1;                 ///< torch threads of the worker: part of the equivalent command line
  std::chrono::milliseconds ping{15000};
  QueueOptions queue;
};

/// One Server-Sent Event: "event: NAME\nid: ID\ndata: JSON\n\n" (no id line when `id` is empty).
std::string sse_event(const std::string& name, const nlohmann::json& data, const std::string& id = "");

/// An error as the API answers it: the status, {"error": {"code", "message", "field"}}.
class ApiError : public Error {
 public:
  ApiError(int status, const std::string& message, std::string field = {})
      : Error(message, std::move(field)), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

/// Binds a POST /v1/generations body to a job: strict types, no unknown fields, every range checked against the
/// model and the limits. Throws ApiError (400, or 404 for an unknown model) naming the field.
JobSpec parse_generation(const nlohmann::json& body, const Catalog& catalog, const ServiceOptions& limits);

class Service {
 public:
  Service(std::shared_ptr<Catalog> catalog, ServiceOptions options, std::map<std::string, Asset> assets = {});
  ~Service();

  /// Never throws: every failure is an answer (4xx for the client's mistakes, 500 without internals otherwise).
  HttpResponse handle(const HttpRequest& request);
  /// Cancels every job and ends every stream (SIGINT, SIGTERM).
  void stop();
  bool stopping() const { return stopping_; }
  void set_port(int port) { options_.port = port; }

  JobQueue& jobs() { return *jobs_; }
  const ServiceOptions& options() const { return options_; }
  size_t open_streams() const { return streams_; }

 private:
  friend class EventStream;
  HttpResponse route(const HttpRequest& r);
  HttpResponse job_route(const HttpRequest& r, const std::string& rest);
  std::optional<HttpResponse> check_access(const HttpRequest& r) const;
  nlohmann::json job_json(const JobSnapshot& s) const;

  std::shared_ptr<Catalog> catalog_;
  ServiceOptions options_;
  std::map<std::string, Asset> assets_;
  std::unique_ptr<JobQueue> jobs_;
  std::atomic<size_t> streams_{0};
  std::atomic<bool> stopping_{false};
};

/// The events of one job, pulled by the transport: queued{position} · started{steps,timesteps,shape,items} ·
/// step{step,of,t,eta_ms,xt,x0} (PNG data URLs; only the latest frame, steps strictly rising) · done{images,grid,
/// seed,cli} · failed{message} · cancelled{reason}; ": ping" comments while nothing happens.
class EventStream {
 public:
  EventStream(Service& service, std::string id);
  ~EventStream();
  EventStream(const EventStream&) = delete;
  EventStream& operator=(const EventStream&) = delete;

  /// Waits at most `wait` for something new: the text of the new events, "" if nothing came (the transport then
  /// checks that its client is still there), nullopt once the last event has been sent.
  std::optional<std::string> next(std::chrono::milliseconds wait);

 private:
  Service& service_;
  std::string id_;
  uint64_t seen_ = 0;
  bool started_sent_ = false, ended_ = false;
  int64_t last_position_ = -1, last_step_ = 0;
  std::chrono::steady_clock::time_point last_sent_;
};

}  // namespace ddpm::serve

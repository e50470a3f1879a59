// ddpm serve: the HTTP API and live page. Every rule is the library's serve::Service; this file only copies
// requests and responses between it and Debian's cpp-httplib 0.11, and handles signals.
#include <httplib.h>
#include <signal.h>

#include <ATen/Parallel.h>

#include <fstream>
#include <iostream>
#include <thread>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/serve/api.h"
#include "page_assets.h"

namespace ddpm::cli {
namespace {

struct ServeArgs {
  std::string models_dir = "models", host = "127.0.0.1", api_key_file, cors_origin;
  int port = 8080;
  int64_t max_queue = 8, max_batch = 16, max_steps = 1000, max_streams = 8, max_job_seconds = 600;
  double cancel_grace = 10;
  bool insecure = false;
};

std::string read_key(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw IoError("cannot read the API key file '" + path + "'");
  std::string key((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(key.begin());
  if (key.size() < 16) throw InvalidArgument("the API key in '" + path + "' must be at least 16 characters");
  return key;
}

serve::HttpRequest to_request(const httplib::Request& req) {
  serve::HttpRequest r;
  r.method = req.method;
  r.path = req.path;
  for (const auto& [k, v] : req.headers) {
    std::string name = k;
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = v;
  }
  r.body = req.body;
  return r;
}

void to_response(serve::HttpResponse out, httplib::Response& res) {
  res.status = out.status;
  for (const auto& [k, v] : out.headers) res.set_header(k, v);
  if (out.stream) {
    // Each call waits up to 1 s for news, then checks the client: httplib 0.11 calls a provider forever after its
    // client left unless it looks (is_writable peeks the socket), and the wait bound lets stop() finish.
    auto stream = out.stream;
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [stream](size_t, httplib::DataSink& sink) {
          if (!sink.is_writable()) return false;
          auto chunk = stream->next(std::chrono::milliseconds(1000));
          if (!chunk) {
            sink.done();
            return true;
          }
          if (!chunk->empty() && !sink.write(chunk->data(), chunk->size())) return false;
          return true;
        },
        [stream](bool) mutable { stream.reset(); });
    return;
  }
  if (out.status == 204) return;
  res.set_content(out.body, out.content_type);
}

void run_serve(const ServeArgs& a) {
  serve::ServiceOptions o;
  o.host = a.host;
  o.cors_origin = a.cors_origin;
  o.max_batch = a.max_batch;
  o.max_steps = a.max_steps;
  o.max_streams = static_cast<size_t>(a.max_streams);
  o.queue.max_queue = static_cast<size_t>(a.max_queue);
  o.queue.max_job_time = std::chrono::seconds(a.max_job_seconds);
  o.threads = at::get_num_threads();
  if (!(a.cancel_grace >= 0 && a.cancel_grace <= 3600)) throw InvalidArgument("--cancel-grace must be 0..3600 seconds");
  o.queue.disconnect_grace = std::chrono::milliseconds(static_cast<int64_t>(a.cancel_grace * 1000));
  if (a.max_queue < 1 || a.max_batch < 1 || a.max_steps < 1 || a.max_streams < 1 || a.max_job_seconds < 1)
    throw InvalidArgument("--max-queue, --max-batch, --max-steps, --max-streams and --max-job-seconds must be at least 1");
  if (a.port < 0 || a.port > 65535) throw InvalidArgument("--port must be 0..65535 (0 = any free port)");
  if (!a.api_key_file.empty()) o.api_key = read_key(a.api_key_file);
  const bool loopback = a.host == "127.0.0.1" || a.host == "localhost" || a.host == "::1";
  if (!loopback && o.api_key.empty() && !a.insecure)
    throw InvalidArgument("listening on " + a.host + " opens the server to the network: give --api-key-file FILE "
                          "(or --insecure to allow anyone)");

  auto catalog = serve::Catalog::scan(a.models_dir);
  std::map<std::string, serve::Asset> assets;
  for (const auto& [path, asset] : page_assets()) assets[path] = {asset.first, asset.second};

  // SIGINT and SIGTERM go to one thread that stops everything cleanly (blocked before any thread starts, so that
  // every thread inherits the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  serve::Service service(catalog, o, assets);
  httplib::Server svr;
  svr.new_task_queue = [] { return new httplib::ThreadPool(16); };  // 8 streams, a browser's 6, /health
  svr.set_payload_max_length(1 << 20);  // beyond the service's own limit, answered by it with JSON
  svr.set_read_timeout(5, 0);
  svr.set_write_timeout(5, 0);
  svr.set_keep_alive_timeout(5);
  auto handler = [&service](const httplib::Request& req, httplib::Response& res) {
    to_response(service.handle(to_request(req)), res);
  };
  svr.Get(".*", handler);
  svr.Post(".*", handler);
  svr.Put(".*", handler);
  svr.Delete(".*", handler);
  svr.Patch(".*", handler);
  svr.Options(".*", handler);
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string msg = res.status == 413 ? "the request body is too large" : "the request could not be read";
    res.set_content(nlohmann::json{{"error", {{"code", "http_" + std::to_string(res.status)}, {"message", msg}}}}.dump(),
                    "application/json");
  });

  int port = a.port;
  if (a.port == 0) {
    port = svr.bind_to_any_port(a.host);
  } else if (!svr.bind_to_port(a.host, a.port)) {
    port = -1;
  }
  if (port <= 0) throw IoError("cannot listen on " + a.host + ":" + std::to_string(a.port) + " (in use, or not an address here)");
  service.set_port(port);
  const std::string shown = a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host;
  std::cout << "listening on http://" << shown << ":" << port << std::endl;
  if (!global_options().quiet) {
    std::cerr << catalog->entries().size() << " model(s) from " << a.models_dir << ":";
    for (const auto& e : catalog->entries()) std::cerr << " " << e.id;
    std::cerr << "\n";
    for (const auto& [file, why] : catalog->skipped()) std::cerr << "  left out " << file << ": " << why << "\n";
  }

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (!global_options().quiet) std::cerr << "stopping (" << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ")\n";
    service.stop();
    svr.stop();
  });
  svr.listen_after_bind();
  // listen returned: either a signal stopped it, or it failed; make sure the waiter ends.
  if (!service.stopping()) kill(getpid(), SIGTERM);
  waiter.join();
}

}  // namespace

void register_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* c = app.add_subcommand("serve", "serve the models of a folder over HTTP: a JSON API and a live page");
  c->add_option("--models-dir", a->models_dir, "every model file directly in this folder, known by its file name")
      ->capture_default_str();
  c->add_option("--host", a->host, "address to listen on (another than loopback needs --api-key-file)")->capture_default_str();
  c->add_option("--port", a->port, "port; 0 picks a free one (printed as 'listening on http://HOST:PORT')")->capture_default_str();
  c->add_option("--api-key-file", a->api_key_file, "require 'Authorization: Bearer KEY' on /v1/ (the key is this file's text)");
  c->add_option("--cors-origin", a->cors_origin, "the one other web origin allowed to call the API (exact match)");
  c->add_option("--max-queue", a->max_queue, "jobs waiting at most (429 beyond)")->capture_default_str();
  c->add_option("--max-batch", a->max_batch, "items per job (per class with class \"all\")")->capture_default_str();
  c->add_option("--max-steps", a->max_steps, "sampler steps per job")->capture_default_str();
  c->add_option("--max-streams", a->max_streams, "event streams open at once (503 beyond)")->capture_default_str();
  c->add_option("--max-job-seconds", a->max_job_seconds, "a running job is cancelled after this")->capture_default_str();
  c->add_option("--cancel-grace", a->cancel_grace,
                 "seconds a job runs on after its last watcher left (then it is cancelled, unless it asked not to be)")
      ->capture_default_str();
  c->add_flag("--insecure", a->insecure, "allow a non-loopback --host without an API key");
  c->callback([a] { run_serve(*a); });
}

}  // namespace ddpm::cli

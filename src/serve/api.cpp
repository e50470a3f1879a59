// The routes of the API and the checks in front of them.
#include "ddpm/serve/api.h"

#include <algorithm>

#include "base64.h"

namespace ddpm::serve {

using json = nlohmann::json;

namespace {

HttpResponse json_response(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump();
  return r;
}

HttpResponse error_response(int status, const std::string& message, const std::string& field = "") {
  static const std::map<int, std::string> codes = {
      {400, "invalid_request"}, {401, "unauthorized"}, {403, "forbidden"},         {404, "not_found"},
      {405, "method_not_allowed"}, {409, "conflict"},  {410, "gone"},              {413, "payload_too_large"},
      {415, "unsupported_media_type"}, {429, "queue_full"}, {500, "internal"},     {503, "unavailable"}};
  json e = {{"code", codes.count(status) ? codes.at(status) : "error"}, {"message", message}};
  if (!field.empty()) e["field"] = field;
  return json_response(status, {{"error", e}});
}

std::string header(const HttpRequest& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? std::string() : it->second;
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  // Runs over the longer string whatever the contents, so timing tells only the length of the key.
  const size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() != b.size();
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned>(i < a.size() ? a[i] : 0) ^ (i < b.size() ? b[i] : 0);
  return diff == 0;
}

bool is_loopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

/// "127.0.0.1:8080" → ("127.0.0.1", "8080"); "[::1]:80" → ("::1", "80").
std::pair<std::string, std::string> split_host(const std::string& h) {
  if (!h.empty() && h[0] == '[') {
    auto close = h.find(']');
    if (close == std::string::npos) return {h, ""};
    std::string port = close + 1 < h.size() && h[close + 1] == ':' ? h.substr(close + 2) : "";
    return {h.substr(1, close - 1), port};
  }
  auto colon = h.rfind(':');
  if (colon == std::string::npos) return {h, ""};
  return {h.substr(0, colon), h.substr(colon + 1)};
}

bool is_job_id(const std::string& s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

Service::Service(std::shared_ptr<Catalog> catalog, ServiceOptions options, std::map<std::string, Asset> assets)
    : catalog_(std::move(catalog)), options_(std::move(options)), assets_(std::move(assets)) {
  auto cat = catalog_;
  const int threads = options_.threads;
  jobs_ = std::make_unique<JobQueue>(
      [cat](const std::string& id) { return cat->load(id); },
      [cat, threads](const JobSpec& spec) {
        const ModelEntry* m = cat->find(spec.model);
        return sample_command(m ? m->path : spec.model, spec.request, threads);
      },
      options_.queue);
}

Service::~Service() { stop(); }

void Service::stop() {
  stopping_ = true;
  jobs_->stop();
}

std::optional<HttpResponse> Service::check_access(const HttpRequest& r) const {
  const std::string host = header(r, "host");
  if (is_loopback(options_.host)) {
    // DNS rebinding: a page of evil.com resolved to 127.0.0.1 sends Host: evil.com.
    auto [name, port] = split_host(host);
    if (!is_loopback(name) || (options_.port != 0 && !port.empty() && port != std::to_string(options_.port)))
      return error_response(403, "the Host header must name this loopback server (got '" + host.substr(0, 100) + "')");
  }
  const std::string origin = header(r, "origin");
  if (!origin.empty() && origin != "http://" + host && origin != options_.cors_origin)
    return error_response(403, "requests from another origin are refused (start the server with --cors-origin)");
  const bool is_public = r.path.rfind("/v1/", 0) != 0;
  if (!options_.api_key.empty() && !is_public && r.method != "OPTIONS") {
    const std::string auth = header(r, "authorization");
    const std::string prefix = "Bearer ";
    const bool ok = auth.rfind(prefix, 0) == 0 && constant_time_equal(auth.substr(prefix.size()), options_.api_key);
    if (!ok) {
      auto e = error_response(401, auth.empty() ? "this server needs an API key: send 'Authorization: Bearer KEY'"
                                                : "the API key is wrong");
      e.headers.push_back({"WWW-Authenticate", "Bearer"});
      return e;
    }
  }
  return std::nullopt;
}

HttpResponse Service::handle(const HttpRequest& r) {
  HttpResponse out;
  try {
    if (auto denied = check_access(r)) {
      out = *denied;
    } else {
      out = route(r);
    }
  } catch (const ApiError& e) {
    out = error_response(e.status(), e.what(), e.field());
  } catch (const QueueFull& e) {
    out = error_response(429, e.what());
    out.headers.push_back({"Retry-After", "5"});
  } catch (const Cancelled&) {
    out = error_response(503, "the server is stopping");
  } catch (const std::exception&) {
    out = error_response(500, "internal error");
  }
  out.headers.push_back({"X-Content-Type-Options", "nosniff"});
  out.headers.push_back({"X-Frame-Options", "DENY"});
  if (out.content_type.rfind("text/html", 0) == 0)
    out.headers.push_back({"Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"});
  if (r.path.rfind("/v1/", 0) == 0 || r.path == "/health") out.headers.push_back({"Cache-Control", "no-store"});
  const std::string origin = header(r, "origin");
  if (!options_.cors_origin.empty() && origin == options_.cors_origin) {
    out.headers.push_back({"Access-Control-Allow-Origin", origin});
    out.headers.push_back({"Vary", "Origin"});
  }
  return out;
}

json Service::job_json(const JobSnapshot& s) const {
  json j = {{"id", s.id},          {"status", status_name(s.status)}, {"queue_position", s.queue_position},
            {"step", s.frame.step}, {"steps", s.steps},                {"t", s.frame.t},
            {"seed", s.spec.request.seed}, {"params", s.spec.params},  {"items", s.items},
            {"cli", s.cli},        {"seconds", s.seconds},            {"started_at", s.started_at}};
  if (!s.message.empty()) j["message"] = s.message;
  if (s.status == JobStatus::done) {
    json images = json::array();
    for (int64_t k = 0; k < s.items; ++k) images.push_back("/v1/generations/" + s.id + "/images/" + std::to_string(k) + ".png");
    j["images"] = images;
    j["grid"] = "/v1/generations/" + s.id + "/grid.png";
  }
  j["events"] = "/v1/generations/" + s.id + "/events";
  return j;
}

HttpResponse Service::route(const HttpRequest& r) {
  const std::string& p = r.path;
  if (r.method == "OPTIONS") {
    HttpResponse pre;
    pre.status = 204;
    pre.content_type.clear();
    if (!options_.cors_origin.empty() && header(r, "origin") == options_.cors_origin) {
      pre.headers.push_back({"Access-Control-Allow-Methods", "GET, POST"});
      pre.headers.push_back({"Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID"});
    }
    return pre;
  }
  auto method = [&](const char* m) {
    if (r.method != m) throw ApiError(405, std::string("use ") + m + " for " + p);
  };
  if (p == "/health") {
    method("GET");
    return json_response(200, {{"status", stopping_ ? "stopping" : "ok"}});
  }
  if (p == "/" || assets_.count(p)) {
    method("GET");
    const auto& a = assets_.count(p) ? assets_.at(p) : assets_.count("/index.html") ? assets_.at("/index.html") : Asset{};
    if (a.body.empty()) throw ApiError(404, "this server has no page");
    HttpResponse res;
    res.content_type = a.content_type;
    res.body = a.body;
    return res;
  }
  if (p == "/v1/models") {
    method("GET");
    json models = json::array();
    for (const auto& e : catalog_->entries()) models.push_back(e.to_json());
    json classifiers = json::array();
    for (const auto& k : catalog_->classifiers()) classifiers.push_back(k.to_json());
    return json_response(200, {{"models", models}, {"classifiers", classifiers}});
  }
  if (p == "/v1/capabilities") {
    method("GET");
    json samplers = json::array();
    for (const auto& s : sampler_registry()) {
      json params = json::array();
      for (const auto& q : s.params) params.push_back({{"name", q.name}, {"default", q.default_value}, {"help", q.help}});
      samplers.push_back({{"name", s.name}, {"help", s.help}, {"stochastic", s.stochastic}, {"params", params},
                          {"calls_per_step", s.calls_per_step}});
    }
    return json_response(200, {{"samplers", samplers},
                               {"spacings", {"ddim", "even", "quadratic", "logsnr", "linspace", "leading", "trailing"}},
                               {"limits",
                                {{"max_batch", options_.max_batch},
                                 {"max_steps", options_.max_steps},
                                 {"max_calls", options_.max_calls},
                                 {"max_queue", options_.queue.max_queue},
                                 {"max_streams", options_.max_streams},
                                 {"max_body", options_.max_body},
                                 {"guidance", {0, 20}},
                                 {"classifier_scale", {0, 100}},
                                 {"strength", {0, 1}},
                                 {"resample", {1, 100}},
                                 {"jump", {1, 1000}},
                                 {"eta", {0, 10}}}},
                               {"threads", options_.threads},
                               {"api_key", !options_.api_key.empty()}});
  }
  if (p == "/v1/queue") {
    method("GET");
    json q = json::array();
    for (const auto& s : jobs_->queue()) q.push_back({{"id", s.id}, {"status", status_name(s.status)}, {"queue_position", s.queue_position}});
    return json_response(200, {{"jobs", q}});
  }
  if (p == "/v1/generations") {
    method("POST");
    if (r.body.size() > options_.max_body) throw ApiError(413, "the request body is over " + std::to_string(options_.max_body) + " bytes");
    const std::string ct = header(r, "content-type");
    if (ct.rfind("application/json", 0) != 0) throw ApiError(415, "send the request as Content-Type: application/json");
    json body = json::parse(r.body, nullptr, false);
    if (body.is_discarded()) throw ApiError(400, "the request body is not valid JSON");
    if (stopping_) throw ApiError(503, "the server is stopping");
    auto spec = parse_generation(body, *catalog_, options_);
    auto sub = jobs_->submit(std::move(spec));
    auto snap = jobs_->get(sub.id);
    json j = snap ? job_json(*snap) : json{{"id", sub.id}};
    j["queue_position"] = sub.position;
    auto res = json_response(202, j);
    res.headers.push_back({"Location", "/v1/generations/" + sub.id});
    return res;
  }
  const std::string prefix = "/v1/generations/";
  if (p.rfind(prefix, 0) == 0) return job_route(r, p.substr(prefix.size()));
  throw ApiError(404, "no such route: " + p.substr(0, 200));
}

HttpResponse Service::job_route(const HttpRequest& r, const std::string& rest) {
  const auto slash = rest.find('/');
  const std::string id = rest.substr(0, slash), tail = slash == std::string::npos ? "" : rest.substr(slash);
  auto unknown = [&]() -> ApiError {
    if (is_job_id(id) && jobs_->expired(id)) return ApiError(410, "job " + id + " has expired: results are kept for a while only");
    return ApiError(404, "no job with id '" + id.substr(0, 64) + "'");
  };
  if (!is_job_id(id)) throw unknown();
  auto method = [&](const char* m) {
    if (r.method != m) throw ApiError(405, std::string("use ") + m + " for " + r.path);
  };
  if (tail.empty()) {
    method("GET");
    auto s = jobs_->get(id);
    if (!s) throw unknown();
    return json_response(200, job_json(*s));
  }
  if (tail == "/cancel") {
    method("POST");
    switch (jobs_->cancel(id)) {
      case JobQueue::CancelResult::not_found: throw unknown();
      case JobQueue::CancelResult::finished: throw ApiError(409, "job " + id + " has already finished");
      case JobQueue::CancelResult::cancelled: break;
    }
    auto s = jobs_->get(id);
    return json_response(200, s ? job_json(*s) : json{{"id", id}});
  }
  if (tail == "/events") {
    method("GET");
    if (!jobs_->get(id)) throw unknown();
    if (streams_ >= options_.max_streams)
      throw ApiError(503, "too many event streams are open (" + std::to_string(options_.max_streams) + "); poll the job instead");
    HttpResponse res;
    res.content_type = "text/event-stream";
    res.stream = std::make_shared<EventStream>(*this, id);
    return res;
  }
  std::string png;
  if (tail == "/grid.png" || tail.rfind("/images/", 0) == 0) {
    method("GET");
    auto s = jobs_->get(id, true);
    if (!s) throw unknown();
    if (s->status != JobStatus::done) throw ApiError(409, "job " + id + " is " + status_name(s->status) + ", not done");
    if (tail == "/grid.png") {
      png = s->grid_png;
    } else {
      const std::string k = tail.substr(8);
      const bool digits = k.size() > 4 && k.size() <= 9 && k.substr(k.size() - 4) == ".png" &&
                          std::all_of(k.begin(), k.end() - 4, [](char c) { return c >= '0' && c <= '9'; });
      const size_t index = digits ? std::stoul(k.substr(0, k.size() - 4)) : s->images.size();
      if (index >= s->images.size()) throw ApiError(404, "job " + id + " has images 0.." + std::to_string(s->images.size() - 1));
      png = s->images[index];
    }
    HttpResponse res;
    res.content_type = "image/png";
    res.body = png;
    return res;
  }
  throw ApiError(404, "no such route: " + r.path.substr(0, 200));
}

}  // namespace ddpm::serve

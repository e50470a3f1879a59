// The event stream of one job, and the Server-Sent Events encoding.
#include "ddpm/serve/api.h"
#include "base64.h"

namespace ddpm::serve {

using json = nlohmann::json;

std::string sse_event(const std::string& name, const json& data, const std::string& id) {
  // One data line: a JSON dump holds no raw newline.
  std::string s = "event: " + name + "\n";
  if (!id.empty()) s += "id: " + id + "\n";
  return s + "data: " + data.dump() + "\n\n";
}

std::string png_data_url(const std::string& png) { return png.empty() ? "" : "data:image/png;base64," + base64(png); }

EventStream::EventStream(Service& service, std::string id) : service_(service), id_(std::move(id)) {
  ++service_.streams_;
  service_.jobs().subscribe(id_);
  last_sent_ = std::chrono::steady_clock::now();
}

EventStream::~EventStream() {
  service_.jobs().unsubscribe(id_);
  --service_.streams_;
}

std::optional<std::string> EventStream::next(std::chrono::milliseconds wait) {
  if (ended_) return std::nullopt;
  if (seen_ != 0) seen_ = service_.jobs().wait(id_, seen_, wait);
  auto snap = service_.jobs().get(id_, true);
  if (!snap) {
    ended_ = true;
    return sse_event("failed", {{"message", "the job's results have expired"}});
  }
  seen_ = snap->version;
  std::string out;
  const auto& s = *snap;
  if (s.status == JobStatus::queued && s.queue_position != last_position_) {
    last_position_ = s.queue_position;
    out += sse_event("queued", {{"position", s.queue_position}});
  }
  if (s.status != JobStatus::queued && !started_sent_ && s.status != JobStatus::cancelled && s.steps > 0) {
    started_sent_ = true;
    const ModelEntry* m = service_.catalog_->find(s.spec.model);
    out += sse_event("started", {{"steps", s.steps},
                                 {"timesteps", m ? m->timesteps : 0},
                                 {"shape", m ? m->item_shape : std::vector<int64_t>{}},
                                 {"items", s.items}});
  }
  if (s.frame.step > last_step_) {
    last_step_ = s.frame.step;
    out += sse_event("step",
                     {{"step", s.frame.step},
                      {"of", s.frame.steps},
                      {"t", s.frame.t},
                      {"eta_ms", std::llround(s.frame.eta_ms)},
                      {"xt", png_data_url(s.frame.xt_png)},
                      {"x0", png_data_url(s.frame.x0_png)}},
                     std::to_string(s.frame.step));
  }
  if (finished(s.status)) {
    ended_ = true;
    if (s.status == JobStatus::done) {
      json images = json::array();
      for (const auto& png : s.images) images.push_back(png_data_url(png));
      out += sse_event("done", {{"images", images},
                                {"grid", png_data_url(s.grid_png)},
                                {"seed", s.spec.request.seed},
                                {"cli", s.cli},
                                {"seconds", s.seconds}});
    } else if (s.status == JobStatus::failed) {
      out += sse_event("failed", {{"message", s.message}});
    } else {
      out += sse_event("cancelled", {{"reason", s.message}});
    }
  }
  if (out.empty() && std::chrono::steady_clock::now() - last_sent_ >= service_.options().ping) out = ": ping\n\n";
  if (!out.empty()) last_sent_ = std::chrono::steady_clock::now();
  return out;
}

}  // namespace ddpm::serve

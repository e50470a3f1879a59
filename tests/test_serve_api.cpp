// The job queue and the API's rules, driven directly: FIFO order and bounds, cancellation, expiry, abandoned jobs;
// status codes for every kind of bad request, the key, Host and Origin checks, CORS, and the event stream.
#include "ddpm/data/images.h"
#include "ddpm/serve/api.h"
#include "../src/serve/base64.h"
#include "serve_support.h"

using namespace ddpm;
using namespace ddpm::serve;
using namespace ddpm::test;

namespace {

struct QueueFixture {
  Gated gate;
  std::unique_ptr<JobQueue> q;
  explicit QueueFixture(QueueOptions o = {}) {
    q = std::make_unique<JobQueue>([this](const std::string&) { return gate.model(); },
                                   [](const JobSpec& s) { return "ddpm sample -m " + s.model; }, o);
  }
  JobStatus status(const std::string& id) { return q->get(id)->status; }
};

HttpRequest get(const std::string& path) {
  HttpRequest r;
  r.method = "GET";
  r.path = path;
  r.headers["host"] = "127.0.0.1:8080";
  return r;
}

HttpRequest post(const std::string& path, const std::string& body) {
  auto r = get(path);
  r.method = "POST";
  r.body = body;
  r.headers["content-type"] = "application/json";
  return r;
}

json body_of(const HttpResponse& r) { return json::parse(r.body, nullptr, false); }

std::string header_of(const HttpResponse& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return "";
}

ServiceOptions small_limits() {
  ServiceOptions o;
  o.port = 8080;
  o.max_batch = 4;
  o.max_steps = 50;
  o.max_calls = 60;
  o.max_body = 16 * 1024;
  return o;
}

}  // namespace

TEST(Jobs, RunInOrderOneAtATimeAndRefuseBeyondTheQueue) {
  QueueOptions o;
  o.max_queue = 3;
  QueueFixture f(o);
  f.gate.open = false;
  auto first = f.q->submit(points_job());
  ASSERT_TRUE(eventually([&] { return f.status(first.id) == JobStatus::running; }));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto s = f.q->submit(points_job());
    EXPECT_EQ(s.position, i + 1);
    ids.push_back(s.id);
  }
  EXPECT_THROW(f.q->submit(points_job()), QueueFull);
  EXPECT_EQ(f.q->get(ids[2])->queue_position, 3);
  // Cancelling a waiting job moves those behind it up.
  EXPECT_EQ(f.q->cancel(ids[0]), JobQueue::CancelResult::cancelled);
  EXPECT_EQ(f.status(ids[0]), JobStatus::cancelled);
  EXPECT_EQ(f.q->get(ids[2])->queue_position, 2);
  f.gate.open = true;
  ASSERT_TRUE(eventually([&] { return f.status(ids[2]) == JobStatus::done; }));
  EXPECT_EQ(f.status(first.id), JobStatus::done);
  EXPECT_EQ(f.status(ids[1]), JobStatus::done);
  EXPECT_EQ(f.q->cancel(first.id), JobQueue::CancelResult::finished);
  EXPECT_EQ(f.q->cancel("0123456789abcdef0123456789abcdef"), JobQueue::CancelResult::not_found);
  EXPECT_EQ(f.gate.calls, 3 * 5);  // three jobs ran, five steps each; the cancelled one never started
  EXPECT_EQ(f.q->get(first.id)->cli, "ddpm sample -m points");
}

TEST(Jobs, CancellingARunningJobStopsItWithinOneNetworkCall) {
  QueueFixture f;
  f.gate.open = false;
  auto s = f.q->submit(points_job(1000));
  ASSERT_TRUE(eventually([&] { return f.status(s.id) == JobStatus::running; }));
  EXPECT_EQ(f.q->cancel(s.id), JobQueue::CancelResult::cancelled);
  const int before = f.gate.calls;  // the call in flight (blocked at the gate) is the last one
  f.gate.open = true;
  ASSERT_TRUE(eventually([&] { return f.status(s.id) == JobStatus::cancelled; }));
  EXPECT_LE(f.gate.calls, before + 1);
  EXPECT_EQ(f.q->get(s.id)->message, "cancelled by request");
}

TEST(Jobs, KeepOnlyTheLatestFrameAndRiseInVersion) {
  QueueFixture f;
  auto s = f.q->submit(points_job(20));
  uint64_t v = 0;
  int64_t last_step = 0;
  while (true) {
    v = f.q->wait(s.id, v, std::chrono::milliseconds(200));
    auto snap = f.q->get(s.id);
    ASSERT_TRUE(snap);
    EXPECT_GE(snap->frame.step, last_step);
    last_step = snap->frame.step;
    if (finished(snap->status)) break;
  }
  EXPECT_EQ(last_step, 20);
  EXPECT_EQ(f.q->get(s.id)->frame.t, 0);  // the last step is t = 0
}

TEST(Jobs, FinishedJobsExpire) {
  QueueOptions o;
  o.keep_results = 1;
  QueueFixture f(o);
  auto a = f.q->submit(points_job(2));
  ASSERT_TRUE(eventually([&] { return f.status(a.id) == JobStatus::done; }));
  auto b = f.q->submit(points_job(2));
  ASSERT_TRUE(eventually([&] { return f.status(b.id) == JobStatus::done; }));
  f.q->submit(points_job(2));  // pruning happens on submission
  EXPECT_FALSE(f.q->get(a.id));
  EXPECT_TRUE(f.q->expired(a.id));
  EXPECT_FALSE(f.q->expired("ffffffffffffffffffffffffffffffff"));
}

TEST(Jobs, AJobEveryReaderLeftIsCancelledAfterTheGrace) {
  QueueOptions o;
  o.disconnect_grace = std::chrono::milliseconds(0);
  QueueFixture f(o);
  f.gate.open = false;
  auto kept = points_job(1000);
  kept.cancel_on_disconnect = false;
  auto a = f.q->submit(points_job(1000));
  f.q->subscribe(a.id);
  ASSERT_TRUE(eventually([&] { return f.status(a.id) == JobStatus::running; }));
  f.q->unsubscribe(a.id);
  f.gate.open = true;
  ASSERT_TRUE(eventually([&] { return f.status(a.id) == JobStatus::cancelled; }));
  EXPECT_NE(f.q->get(a.id)->message.find("left"), std::string::npos);
  // One that asked to survive its readers runs on; a job nobody ever watched is not abandoned either.
  auto b = f.q->submit(kept);
  f.q->subscribe(b.id);
  f.q->unsubscribe(b.id);
  auto c = f.q->submit(points_job(3));
  ASSERT_TRUE(eventually([&] { return f.status(c.id) == JobStatus::done; }));
  EXPECT_EQ(f.status(b.id), JobStatus::done);
}

TEST(Jobs, StopCancelsEverything) {
  QueueFixture f;
  f.gate.open = false;
  auto a = f.q->submit(points_job(1000));
  auto b = f.q->submit(points_job(10));
  ASSERT_TRUE(eventually([&] { return f.status(a.id) == JobStatus::running; }));
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    f.gate.open = true;
  });
  f.q->stop();
  opener.join();
  EXPECT_EQ(f.status(a.id), JobStatus::cancelled);
  EXPECT_EQ(f.status(b.id), JobStatus::cancelled);
  EXPECT_THROW(f.q->submit(points_job()), Cancelled);
}

TEST(Api, BadGenerationRequestsGetTheRightCodeAndField) {
  Service svc(catalog(), small_limits());
  struct Case {
    std::string body;
    int status;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"not json", 400, ""},
      {"[1, 2]", 400, ""},
      {R"({"model":"cond","frobnicate":1})", 400, "frobnicate"},
      {R"({"model":"cond","steps":0})", 400, "steps"},
      {R"({"model":"cond","steps":-1})", 400, "steps"},
      {R"({"model":"cond","steps":1000000000})", 400, "steps"},
      {R"({"model":"cond","steps":51})", 400, "steps"},  // over --max-steps
      {R"({"model":"cond","steps":"10"})", 400, "steps"},
      {R"({"model":"cond","steps":10.5})", 400, "steps"},
      {R"({"model":"cond","steps":18446744073709551615})", 400, "steps"},
      {R"({"model":"cond","batch":5})", 400, "batch"},
      {R"({"model":"cond","batch":0})", 400, "batch"},
      {R"({"model":"cond","class":10})", 400, "class"},
      {R"({"model":"cond","class":-1})", 400, "class"},
      {R"({"model":"cond","class":"shoes"})", 400, "class"},
      {R"({"model":"uncond","class":1})", 400, "class"},
      {R"({"model":"uncond","class":"all"})", 400, "class"},
      {R"({"model":"cond","class":1,"guidance":"NaN"})", 400, "guidance"},
      {R"({"model":"cond","class":1,"guidance":21})", 400, "guidance"},
      {R"({"model":"cond","class":1,"guidance":-1})", 400, "guidance"},
      {R"({"model":"cond","guidance":2})", 400, "guidance"},
      {R"({"model":"uncond","guidance":2})", 400, "guidance"},
      {R"({"model":"cond","sampler":"ddpm","eta":1})", 400, "eta"},
      {R"({"model":"cond","sampler":"ddim","eta":11})", 400, "eta"},
      {R"({"model":"cond","sampler":"euler"})", 400, "sampler"},
      {R"({"model":"cond","sampler":"dpm++","order":3})", 400, "order"},
      {R"({"model":"cond","spacing":"sideways"})", 400, "spacing"},
      {R"({"model":"cond","seed":-1})", 400, "seed"},
      {R"({"model":"cond","seed":9223372036854775808})", 400, "seed"},
      {R"({"model":"cond","seed":1.5})", 400, "seed"},
      {R"({"model":"cond","clip":"yes"})", 400, "clip"},
      {R"({"model":"cond","class":1,"guidance":1,"steps":31})", 400, "steps"},  // 62 calls > max_calls 60
      {R"({"model":7})", 400, "model"},
      {R"({})", 400, "model"},  // two models: no default
      {R"({"model":"../cond"})", 404, "model"},
      {R"({"model":"/etc/passwd"})", 404, "model"},
      {R"({"model":"%2e%2e%2fcond"})", 404, "model"},
      {R"({"model":"co\u0000nd"})", 404, "model"},
      {R"({"model":"nope"})", 404, "model"},
  };
  for (const auto& c : cases) {
    auto r = svc.handle(post("/v1/generations", c.body));
    EXPECT_EQ(r.status, c.status) << c.body << " → " << r.body;
    auto b = body_of(r);
    ASSERT_TRUE(b.contains("error")) << r.body;
    EXPECT_EQ(b["error"].value("field", std::string()), c.field) << c.body << " → " << r.body;
    EXPECT_FALSE(b["error"]["message"].get<std::string>().empty());
  }
  EXPECT_EQ(svc.jobs().queue().size(), 0u);  // none of them made a job
  auto ok = svc.handle(post("/v1/generations", R"({"model":"cond","class":"all","steps":2,"seed":5,"batch":1})"));
  EXPECT_EQ(ok.status, 202) << ok.body;
  EXPECT_EQ(body_of(ok)["seed"], 5);
}

TEST(Api, ClassifierGuidanceEditsAndInpaintingAreCheckedStrictly) {
  Service svc(catalog(), small_limits());
  // A 28×28 grey PNG (padded to the models' 32×32), a 32×32 one, a colour one, and not-quite images.
  auto png = [](int64_t c, int64_t h, int64_t w) {
    return "\"data:image/png;base64," + base64(encode_image_png(at::zeros({c, h, w}))) + "\"";
  };
  const std::string img = png(1, 28, 28), full = png(1, 32, 32), colour = png(3, 28, 28), small = png(1, 20, 20);
  const std::string junk = "\"" + base64("not an image at all") + "\"";
  struct Case {
    std::string body;
    int status;
    std::string field;
  };
  const std::vector<Case> cases = {
      {R"({"model":"uncond","classifier":"guide"})", 400, "class"},
      {R"({"model":"uncond","classifier":"guide","class":10})", 400, "class"},
      {R"({"model":"uncond","classifier":"nope","class":1})", 404, "classifier"},
      {R"({"model":"uncond","classifier":"../guide","class":1})", 404, "classifier"},
      {R"({"model":"uncond","classifier":"cond","class":1})", 404, "classifier"},
      {R"({"model":"uncond","classifier":3,"class":1})", 400, "classifier"},
      {R"({"model":"uncond","classifier_scale":2,"class":1})", 400, "classifier_scale"},
      {R"({"model":"uncond","classifier":"guide","class":1,"classifier_scale":101})", 400, "classifier_scale"},
      {R"({"model":"uncond","classifier":"guide","class":1,"classifier_scale":-1})", 400, "classifier_scale"},
      {R"({"model":"cond","classifier":"guide","class":1,"guidance":2})", 400, "guidance"},
      {R"({"model":"uncond","classifier":"guide","class":1,"steps":31})", 400, "steps"},  // 62 calls > 60
      {R"({"model":"cond","strength":0.5})", 400, "strength"},
      {R"({"model":"cond","region":"right"})", 400, "region"},
      {R"({"model":"cond","jump":2})", 400, "jump"},
      {R"({"model":"cond","image":)" + img + R"(,"resample":2})", 400, "resample"},
      {R"({"model":"cond","image":)" + img + R"(,"strength":1.5})", 400, "strength"},
      {R"({"model":"cond","image":)" + img + R"(,"class":"all"})", 400, "class"},
      {R"({"model":"cond","image":"Zm9v"})", 400, "image"},
      {R"({"model":"cond","image":"data:text/plain,hello"})", 400, "image"},
      {R"({"model":"cond","image":"%%%%"})", 400, "image"},
      {R"({"model":"cond","image":)" + junk + "}", 400, "image"},
      {R"({"model":"cond","image":)" + small + "}", 400, "image"},
      {R"({"model":"cond","image":7})", 400, "image"},
      {R"({"model":"cond","image":)" + img + R"(,"region":"middle"})", 400, "region"},
      {R"({"model":"cond","image":)" + img + R"(,"region":"right","mask":)" + img + "}", 400, "region"},
      {R"({"model":"cond","image":)" + img + R"(,"mask":)" + full + "}", 400, "mask"},
      {R"({"model":"cond","image":)" + img + R"(,"region":"right","sampler":"ddim"})", 400, "sampler"},
      {R"({"model":"cond","image":)" + img + R"(,"region":"right","strength":0.5})", 400, "strength"},
      {R"({"model":"cond","image":)" + img + R"(,"region":"right","resample":0})", 400, "resample"},
      {R"({"model":"cond","image":)" + img + R"(,"region":"right","steps":13})", 400, "steps"},  // 65 calls > 60
  };
  for (const auto& c : cases) {
    auto r = svc.handle(post("/v1/generations", c.body));
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 200) << " → " << r.body;
    auto b = body_of(r);
    ASSERT_TRUE(b.contains("error")) << r.body;
    EXPECT_EQ(b["error"].value("field", std::string()), c.field) << c.body.substr(0, 200) << " → " << r.body;
  }
  // What is accepted, and what the job says of it: images are not echoed back, defaults are filled in.
  const std::vector<std::string> good = {
      R"({"model":"uncond","classifier":"guide","class":3,"classifier_scale":2,"steps":3,"seed":1})",
      R"({"model":"cond","image":)" + img + R"(,"steps":4,"seed":2,"batch":2})",
      R"({"model":"cond","image":)" + full + R"(,"strength":0.3,"class":1,"steps":4})",
      R"({"model":"uncond","image":)" + colour + R"(,"region":"centre","steps":3,"jump":1,"resample":2})",
      R"({"model":"uncond","image":)" + img + R"(,"mask":)" + img + R"(,"steps":3,"resample":1})",
  };
  std::vector<std::string> ids;
  for (const auto& g : good) {
    auto r = svc.handle(post("/v1/generations", g));
    ASSERT_EQ(r.status, 202) << g.substr(0, 200) << " → " << r.body;
    ids.push_back(body_of(r)["id"]);
  }
  auto wait_done = [&](const std::string& id) {
    json j;
    EXPECT_TRUE(eventually([&] {
      j = body_of(svc.handle(get("/v1/generations/" + id)));
      return j["status"] == "done" || j["status"] == "failed";
    })) << id;
    return j;
  };
  auto guided = wait_done(ids[0]);
  EXPECT_EQ(guided["status"], "done") << guided.dump();
  EXPECT_NE(guided["cli"].get<std::string>().find("--classifier "), std::string::npos) << guided["cli"];
  EXPECT_NE(guided["cli"].get<std::string>().find("--classifier-scale 2"), std::string::npos) << guided["cli"];
  auto edit = wait_done(ids[1]);
  EXPECT_EQ(edit["status"], "done") << edit.dump();
  EXPECT_EQ(edit["params"]["strength"], 0.6);
  EXPECT_NE(edit["params"]["image"].get<std::string>().find("characters of base64"), std::string::npos);
  EXPECT_EQ(edit.dump().find("iVBOR"), std::string::npos);  // no PNG in the job's JSON
  EXPECT_NE(edit["cli"].get<std::string>().find(" edit "), std::string::npos) << edit["cli"];
  EXPECT_NE(edit["cli"].get<std::string>().find("--images input.png,input.png --strength 0.6"), std::string::npos) << edit["cli"];
  EXPECT_EQ(wait_done(ids[2])["status"], "done");
  auto inpaint = wait_done(ids[3]);
  EXPECT_EQ(inpaint["status"], "done") << inpaint.dump();
  EXPECT_EQ(inpaint["params"]["sampler"], "ddpm");
  EXPECT_EQ(inpaint["params"]["jump"], 1);
  EXPECT_NE(inpaint["cli"].get<std::string>().find(" inpaint "), std::string::npos) << inpaint["cli"];
  EXPECT_NE(inpaint["cli"].get<std::string>().find("--region centre --jump 1 --resample 2"), std::string::npos) << inpaint["cli"];
  EXPECT_EQ(wait_done(ids[4])["status"], "done");
  // The models list their classifiers.
  auto models = body_of(svc.handle(get("/v1/models")));
  EXPECT_EQ(models["classifiers"][0]["id"], "guide");
  EXPECT_EQ(models["models"][0]["classifiers"][0], "guide");
}

TEST(Api, TransportLevelMistakes) {
  Service svc(catalog(), small_limits());
  auto big = post("/v1/generations", std::string(20000, ' '));
  EXPECT_EQ(svc.handle(big).status, 413);
  auto text = post("/v1/generations", "{}");
  text.headers["content-type"] = "text/plain";
  EXPECT_EQ(svc.handle(text).status, 415);
  EXPECT_EQ(svc.handle(get("/v1/generations")).status, 405);
  EXPECT_EQ(svc.handle(get("/v1/nothing")).status, 404);
  EXPECT_EQ(svc.handle(get("/v1/generations/0123456789abcdef0123456789abcdef")).status, 404);
  EXPECT_EQ(svc.handle(get("/v1/generations/../../etc/passwd")).status, 404);
  EXPECT_EQ(svc.handle(post("/v1/generations/0123456789abcdef0123456789abcdef/cancel", "")).status, 404);
  EXPECT_EQ(svc.handle(get("/health")).status, 200);
  EXPECT_EQ(body_of(svc.handle(get("/health")))["status"], "ok");
}

TEST(Api, HostOriginKeyAndCors) {
  auto o = small_limits();
  o.api_key = "0123456789abcdef-key";
  Service svc(catalog(), o);
  auto evil = get("/health");
  evil.headers["host"] = "evil.com:8080";
  EXPECT_EQ(svc.handle(evil).status, 403);
  auto other_port = get("/health");
  other_port.headers["host"] = "127.0.0.1:9999";
  EXPECT_EQ(svc.handle(other_port).status, 403);
  for (const char* h : {"localhost:8080", "[::1]:8080", "127.0.0.1"}) {
    auto r = get("/health");
    r.headers["host"] = h;
    EXPECT_EQ(svc.handle(r).status, 200) << h;
  }
  // The key guards /v1/ only; /health and the page stay public.
  EXPECT_EQ(svc.handle(get("/v1/models")).status, 401);
  auto wrong = get("/v1/models");
  wrong.headers["authorization"] = "Bearer 0123456789abcdef-kez";
  EXPECT_EQ(svc.handle(wrong).status, 401);
  auto right = get("/v1/models");
  right.headers["authorization"] = "Bearer 0123456789abcdef-key";
  auto ok = svc.handle(right);
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(body_of(ok)["models"].size(), 2u);
  EXPECT_EQ(ok.body.find(models_dir()), std::string::npos);  // no paths
  auto foreign = post("/v1/generations", "{}");
  foreign.headers["authorization"] = "Bearer 0123456789abcdef-key";
  foreign.headers["origin"] = "http://evil.com";
  EXPECT_EQ(svc.handle(foreign).status, 403);
  auto pre = get("/v1/generations");
  pre.method = "OPTIONS";
  pre.headers["origin"] = "http://127.0.0.1:8080";
  auto pr = svc.handle(pre);
  EXPECT_EQ(header_of(pr, "Access-Control-Allow-Origin"), "");  // no CORS unless configured
  EXPECT_EQ(header_of(ok, "X-Content-Type-Options"), "nosniff");

  auto c = small_limits();
  c.cors_origin = "http://app.example";
  Service cors(catalog(), c);
  auto from = get("/v1/models");
  from.headers["origin"] = "http://app.example";
  EXPECT_EQ(header_of(cors.handle(from), "Access-Control-Allow-Origin"), "http://app.example");
  from.headers["origin"] = "http://app.example.evil";
  EXPECT_EQ(cors.handle(from).status, 403);
}

TEST(Api, AJobStreamsItsStepsInOrderAndEndsWithItsImages) {
  Service svc(catalog(), small_limits());
  auto sub = svc.handle(post("/v1/generations", R"({"model":"cond","class":2,"steps":6,"seed":3,"batch":2})"));
  ASSERT_EQ(sub.status, 202) << sub.body;
  const std::string id = body_of(sub)["id"];
  auto ev = svc.handle(get("/v1/generations/" + id + "/events"));
  ASSERT_EQ(ev.status, 200);
  EXPECT_EQ(ev.content_type, "text/event-stream");
  ASSERT_TRUE(ev.stream);
  std::vector<std::string> names;
  int64_t last = 0;
  json done;
  while (auto chunk = ev.stream->next(std::chrono::milliseconds(500))) {
    size_t at = 0;
    while ((at = chunk->find("event: ", at)) != std::string::npos) {
      const auto eol = chunk->find('\n', at);
      names.push_back(chunk->substr(at + 7, eol - at - 7));
      const auto data = chunk->find("data: ", eol);
      auto j = json::parse(chunk->substr(data + 6, chunk->find('\n', data) - data - 6));
      if (names.back() == "step") {
        EXPECT_GT(j["step"].get<int64_t>(), last);
        last = j["step"];
        EXPECT_EQ(j["x0"].get<std::string>().rfind("data:image/png;base64,", 0), 0u);
      }
      if (names.back() == "done") done = j;
      at = eol;
    }
  }
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.back(), "done");
  EXPECT_EQ(last, 6);
  ASSERT_EQ(done["images"].size(), 2u);
  EXPECT_EQ(done["seed"], 3);
  auto job = body_of(svc.handle(get("/v1/generations/" + id)));
  EXPECT_EQ(job["status"], "done");
  auto png = svc.handle(get("/v1/generations/" + id + "/images/1.png"));
  EXPECT_EQ(png.status, 200);
  EXPECT_EQ(png.content_type, "image/png");
  EXPECT_EQ("data:image/png;base64," + base64(png.body), done["images"][1].get<std::string>());
  EXPECT_EQ(svc.handle(get("/v1/generations/" + id + "/images/2.png")).status, 404);
  EXPECT_EQ(svc.handle(post("/v1/generations/" + id + "/cancel", "")).status, 409);
  EXPECT_NE(job["cli"].get<std::string>().find("--class 2 -n 2 --seed 3"), std::string::npos) << job["cli"];
}

TEST(Api, StreamsAreBounded) {
  auto o = small_limits();
  o.max_streams = 1;
  Service svc(catalog(), o);
  auto sub = svc.handle(post("/v1/generations", R"({"model":"uncond","steps":2})"));
  const std::string id = body_of(sub)["id"];
  auto a = svc.handle(get("/v1/generations/" + id + "/events"));
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(svc.handle(get("/v1/generations/" + id + "/events")).status, 503);
  a.stream.reset();
  EXPECT_EQ(svc.handle(get("/v1/generations/" + id + "/events")).status, 200);
}

// POST /v1/generations: the body bound to a job, strictly.
#include <cmath>
#include <random>
#include <set>

#include "ddpm/serve/api.h"

namespace ddpm::serve {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& field, const std::string& message) { throw ApiError(400, message, field); }

int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) bad(field, "'" + field + "' must be an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    bad(field, "'" + field + "' must be " + std::to_string(lo) + ".." + std::to_string(hi));
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) bad(field, "'" + field + "' must be " + std::to_string(lo) + ".." + std::to_string(hi) + " (got " + std::to_string(x) + ")");
  return x;
}

double real(const json& v, const std::string& field, double lo, double hi) {
  if (!v.is_number()) bad(field, "'" + field + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    bad(field, "'" + field + "' must be between " + json(lo).dump() + " and " + json(hi).dump());
  }
  return x;
}

std::string text(const json& v, const std::string& field) {
  if (!v.is_string()) bad(field, "'" + field + "' must be a string");
  return v.get<std::string>();
}

bool boolean(const json& v, const std::string& field) {
  if (!v.is_boolean()) bad(field, "'" + field + "' must be true or false");
  return v.get<bool>();
}

uint64_t random_seed() {
  std::random_device rd;
  return ((static_cast<uint64_t>(rd()) << 32) | rd()) & ((uint64_t{1} << 63) - 1);
}

}  // namespace

JobSpec parse_generation(const json& body, const Catalog& catalog, const ServiceOptions& limits) {
  if (!body.is_object()) bad("", "the request body must be a JSON object");
  static const std::set<std::string> known = {"model", "sampler", "steps", "spacing", "eta", "order", "langevin_steps",
                                              "langevin_scale", "class", "guidance", "seed", "batch", "clip",
                                              "cancel_on_disconnect"};
  for (auto it = body.begin(); it != body.end(); ++it)
    if (!known.count(it.key())) bad(it.key(), "unknown field '" + it.key() + "'");

  JobSpec job;
  if (!body.contains("model")) {
    if (catalog.entries().size() != 1) bad("model", "'model' is required (see GET /v1/models)");
    job.model = catalog.entries().front().id;
  } else {
    job.model = text(body["model"], "model");
  }
  const ModelEntry* m = catalog.find(job.model);
  if (!m) throw ApiError(404, "unknown model '" + job.model + "' (see GET /v1/models)", "model");

  auto& r = job.request;
  r.sampler.name = body.contains("sampler") ? text(body["sampler"], "sampler") : "ddim";
  const SamplerInfo* info = nullptr;
  for (const auto& s : sampler_registry())
    if (s.name == r.sampler.name) info = &s;
  if (!info) bad("sampler", "unknown sampler '" + r.sampler.name + "' (choose " + [] {
                   std::string n;
                   for (const auto& s : sampler_names()) n += (n.empty() ? "" : ", ") + s;
                   return n;
                 }() + ")");
  const int64_t max_steps = std::min(limits.max_steps, m->timesteps);
  if (body.contains("steps")) r.sampler.steps = integer(body["steps"], "steps", 1, max_steps);
  if (body.contains("spacing")) r.sampler.spacing = text(body["spacing"], "spacing");
  auto only = [&](const char* field, const char* sampler) {
    if (body.contains(field) && r.sampler.name != sampler)
      bad(field, std::string("'") + field + "' applies to the " + sampler + " sampler only");
  };
  only("eta", "ddim");
  only("order", "dpm++");
  only("langevin_steps", "langevin");
  only("langevin_scale", "langevin");
  if (body.contains("eta")) r.sampler.eta = real(body["eta"], "eta", 0.0, 10.0);
  if (body.contains("order")) r.sampler.order = static_cast<int>(integer(body["order"], "order", 1, 2));
  if (body.contains("langevin_steps"))
    r.sampler.langevin.steps_per_level = integer(body["langevin_steps"], "langevin_steps", 1, 100);
  if (body.contains("langevin_scale"))
    r.sampler.langevin.step_scale = real(body["langevin_scale"], "langevin_scale", 1e-6, 10.0);

  if (body.contains("class") && !body["class"].is_null()) {
    const auto& c = body["class"];
    if (m->num_classes == 0) bad("class", "model '" + m->id + "' is unconditional: it takes no class");
    if (c.is_string()) {
      if (c.get<std::string>() != "all") bad("class", "'class' must be a class index or \"all\"");
      r.per_class = true;
    } else {
      r.klass = integer(c, "class", 0, m->num_classes - 1);
    }
  }
  if (body.contains("guidance")) r.guidance = real(body["guidance"], "guidance", 0.0, 20.0);
  if (r.guidance != 0.0 && !m->guidance)
    bad("guidance", "model '" + m->id + "' was not trained for classifier-free guidance");
  if (r.guidance != 0.0 && !r.klass && !r.per_class) bad("guidance", "guidance needs a class (or \"all\")");
  if (body.contains("seed") && !body["seed"].is_null()) {
    r.seed = static_cast<uint64_t>(integer(body["seed"], "seed", 0, std::numeric_limits<int64_t>::max()));
  } else {
    r.seed = random_seed();
  }
  r.num = body.contains("batch") ? integer(body["batch"], "batch", 1, limits.max_batch) : 1;
  if (body.contains("clip")) r.clip = boolean(body["clip"], "clip");
  if (body.contains("cancel_on_disconnect")) job.cancel_on_disconnect = boolean(body["cancel_on_disconnect"], "cancel_on_disconnect");

  try {
    r.sampler.validate();
    if (!r.sampler.spacing.empty()) (void)r.sampler.timesteps(m->diffusion);
  } catch (const Error& e) {
    bad(e.field().empty() ? "spacing" : e.field(), e.what());
  }
  const int64_t steps = r.sampler.steps ? *r.sampler.steps : std::min(info->default_steps(m->timesteps), max_steps);
  if (!r.sampler.steps) r.sampler.steps = steps;
  const int64_t calls = steps * (r.sampler.name == "langevin" ? r.sampler.langevin.steps_per_level : 1) *
                        (r.guidance != 0.0 ? 2 : 1);
  if (calls > limits.max_calls)
    bad("steps", "this job needs " + std::to_string(calls) + " network calls; the server allows " +
                     std::to_string(limits.max_calls) + " per job");

  job.params = body;
  job.params["model"] = job.model;
  job.params["sampler"] = r.sampler.name;
  job.params["steps"] = steps;
  job.params["seed"] = r.seed;
  job.params["batch"] = r.num;
  return job;
}

}  // namespace ddpm::serve

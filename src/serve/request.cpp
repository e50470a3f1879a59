// POST /v1/generations: the body bound to a job, strictly.
#include <cmath>
#include <random>
#include <set>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/serve/api.h"
#include "base64.h"

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

/// Base64 (an optional "data:…;base64," prefix as browsers write it), strictly.
std::string base64_field(const json& v, const std::string& field) {
  std::string s = text(v, field);
  if (s.rfind("data:", 0) == 0) {
    const auto comma = s.find(',');
    if (comma == std::string::npos || comma < 12 || s.compare(comma - 7, 7, ";base64") != 0)
      bad(field, "'" + field + "' must be a base64 data URL (data:image/png;base64,…) or plain base64");
    s = s.substr(comma + 1);
  }
  std::string out;
  if (!base64_decode(s, out)) bad(field, "'" + field + "' is not valid base64");
  return out;
}

/// A base64 PNG/JPEG/BMP field, decoded.
ImageSet image_field(const json& v, const std::string& field) {
  const std::string bytes = base64_field(v, field);
  try {
    return decode_image(bytes, field);
  } catch (const Error& e) {
    bad(field, e.what());
  }
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
                                              "cancel_on_disconnect", "classifier", "classifier_scale", "image",
                                              "strength", "mask", "region", "jump", "resample"};
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
  const bool inpaint = body.contains("mask") || body.contains("region");
  for (const char* f : {"strength", "mask", "region"})
    if (body.contains(f) && !body.contains("image")) bad(f, std::string("'") + f + "' needs an 'image' to start from");
  for (const char* f : {"jump", "resample"})
    if (body.contains(f) && !inpaint) bad(f, std::string("'") + f + "' applies to inpainting (give a 'mask' or 'region')");
  if (inpaint && body.contains("strength")) bad("strength", "inpainting takes no 'strength': the masked part is generated whole");
  if (body.contains("mask") && body.contains("region")) bad("region", "give a 'mask' image or a 'region', not both");
  // RePaint runs DDPM's reverse steps; an edit or a plain generation defaults to DDIM.
  r.sampler.name = body.contains("sampler") ? text(body["sampler"], "sampler") : inpaint ? "ddpm" : "ddim";
  if (inpaint && r.sampler.name != "ddpm")
    bad("sampler", "inpainting runs RePaint over DDPM's steps: use the ddpm sampler (or leave 'sampler' out)");
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

  const ClassifierEntry* k = nullptr;
  if (body.contains("classifier")) {
    const std::string id = text(body["classifier"], "classifier");
    k = catalog.find_classifier(id);
    if (!k) throw ApiError(404, "unknown classifier '" + id.substr(0, 64) + "' (see GET /v1/models: each model lists its classifiers)", "classifier");
    if (!k->fits(*m))
      bad("classifier", "classifier '" + k->id + "' was not trained for model '" + m->id + "' (its process or image size differ)");
    r.classifier = k->classifier;
    r.classifier_classes = k->num_classes;
    r.classifier_spec = k->path;
  }
  if (body.contains("classifier_scale")) {
    if (!k) bad("classifier_scale", "'classifier_scale' needs a 'classifier'");
    r.classifier_scale = real(body["classifier_scale"], "classifier_scale", 0.0, 100.0);
  }
  const int64_t classes = k ? k->num_classes : m->num_classes;
  if (body.contains("class") && !body["class"].is_null()) {
    const auto& c = body["class"];
    if (classes == 0)
      bad("class", "model '" + m->id + "' is unconditional: it takes no class (unless a 'classifier' guides it)");
    if (c.is_string()) {
      if (c.get<std::string>() != "all") bad("class", "'class' must be a class index or \"all\"");
      if (body.contains("image")) bad("class", "an edit starts from its image: give one class, not \"all\"");
      r.per_class = true;
    } else {
      r.klass = integer(c, "class", 0, classes - 1);
    }
  }
  if (k && !r.klass && !r.per_class) bad("class", "classifier guidance needs a 'class' to guide towards (or \"all\")");
  if (body.contains("guidance")) r.guidance = real(body["guidance"], "guidance", 0.0, 20.0);
  if (k && r.guidance != 0.0) bad("guidance", "give classifier-free 'guidance' or a 'classifier', not both");
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
  if (body.contains("image")) {
    if (m->item_shape.size() != 3) bad("image", "model '" + m->id + "' does not make images");
    ModelImages in;
    try {
      in = images_for_model(image_field(body["image"], "image"), m->item_shape, "'image'");
    } catch (const ApiError&) {
      throw;
    } catch (const Error& e) {
      bad("image", e.what());
    }
    r.edit_from = in.x.repeat({r.num, 1, 1, 1});
    if (inpaint) {
      const int64_t H = in.x.size(2) - 2 * in.pad_h, W = in.x.size(3) - 2 * in.pad_w;
      try {
        if (body.contains("region")) {
          const std::string region = text(body["region"], "region");
          r.inpaint_mask = in.pad_mask(region_mask(region, H, W));
          r.mask_spec = "--region " + region;
        } else {
          r.inpaint_mask = in.pad_mask(mask_from_image(image_field(body["mask"], "mask"), H, W, "'mask'"));
        }
      } catch (const ApiError&) {
        throw;
      } catch (const Error& e) {
        bad(e.field().empty() ? "mask" : e.field(), e.what());
      }
      r.repaint = {10, 5};
      if (body.contains("jump")) r.repaint.jump = integer(body["jump"], "jump", 1, 1000);
      if (body.contains("resample")) r.repaint.resample = integer(body["resample"], "resample", 1, 100);
    } else {
      r.strength = body.contains("strength") ? real(body["strength"], "strength", 0.0, 1.0) : 0.6;
    }
  }
  if (body.contains("cancel_on_disconnect")) job.cancel_on_disconnect = boolean(body["cancel_on_disconnect"], "cancel_on_disconnect");

  try {
    r.sampler.validate();
    if (!r.sampler.spacing.empty()) (void)r.sampler.timesteps(m->diffusion);
  } catch (const Error& e) {
    bad(e.field().empty() ? "spacing" : e.field(), e.what());
  }
  // Inpainting defaults to 100 steps (RePaint resamples each of them): a 500-call job by default.
  const int64_t default_steps = inpaint ? std::min<int64_t>(100, m->timesteps) : info->default_steps(m->timesteps);
  const int64_t steps = r.sampler.steps ? *r.sampler.steps : std::min(default_steps, max_steps);
  if (!r.sampler.steps) r.sampler.steps = steps;
  // Guidance of either kind costs about a second call per step (a paired batch, or the classifier's gradient).
  const int64_t calls = r.calls(m->diffusion) * (r.guidance != 0.0 || k ? 2 : 1);
  if (calls > limits.max_calls)
    bad("steps", "this job needs " + std::to_string(calls) + " network calls; the server allows " +
                     std::to_string(limits.max_calls) + " per job");

  job.params = body;
  // The images are not echoed back: their size stands in for them.
  for (const char* f : {"image", "mask"})
    if (body.contains(f)) job.params[f] = std::to_string(body[f].get<std::string>().size()) + " characters of base64";
  if (inpaint) job.params["jump"] = r.repaint.jump, job.params["resample"] = r.repaint.resample;
  if (body.contains("image") && !inpaint) job.params["strength"] = r.strength;
  job.params["model"] = job.model;
  job.params["sampler"] = r.sampler.name;
  job.params["steps"] = steps;
  job.params["seed"] = r.seed;
  job.params["batch"] = r.num;
  return job;
}

}  // namespace ddpm::serve

#include "server/refiner_request.h"

#include <cmath>

#include "core/error.h"
#include "server/model_registry.h"

namespace diffuse::server {
namespace {

// The refiner `name` of the registry, loaded (kept beside the base: one slot more than --max-loaded).
void use_refiner(Server::State& s, const std::string& field, const std::string& name, GenerationParams& p) {
  const std::optional<ModelEntry> e = s.models->find(name);
  if (!e) throw_error(ErrorCode::kNotFound, field + ": model '" + name + "' not found (see /sdapi/v1/sd-models)");
  p.refiner.model = s.models->acquire(e->id, 1);
}

void set_switch(const std::string& field, double v, GenerationParams& p) {
  DIFFUSE_CHECK_ARG(std::isfinite(v) && v > 0.0 && v < 1.0,
                    field + ": must be between 0 and 1 (exclusive), got " + std::to_string(v));
  p.refiner.switch_at = v;
}

}  // namespace

void apply_a1111_refiner(Server::State& s, const nlohmann::json& body, const nlohmann::json& overrides,
                         GenerationParams& p) {
  p.refiner.aesthetic_score = json_field<double>(overrides, "sdxl_refiner_high_aesthetic_score", 6.0);
  p.refiner.negative_aesthetic_score = json_field<double>(overrides, "sdxl_refiner_low_aesthetic_score", 2.5);
  const std::string name = json_field<std::string>(body, "refiner_checkpoint", "");
  if (name.empty() || name == "None") return;
  // A1111 skips the refiner at a switch of 1 (or more); ours refuses what cannot run.
  set_switch("refiner_switch_at", json_field<double>(body, "refiner_switch_at", 0.8), p);
  use_refiner(s, "refiner_checkpoint", name, p);
}

void apply_native_refiner(Server::State& s, const nlohmann::json& body, GenerationParams& p) {
  if (!body.is_object() || !body.contains("refiner") || body["refiner"].is_null()) return;
  const nlohmann::json& r = body["refiner"];
  if (r.is_string()) {
    if (!r.get<std::string>().empty()) use_refiner(s, "refiner", r.get<std::string>(), p);
    return;
  }
  DIFFUSE_CHECK_ARG(r.is_object(), "field 'refiner' must be a model name or an object {model, switch_at, ...}");
  p.refiner.aesthetic_score = json_field<double>(r, "aesthetic_score", 6.0);
  p.refiner.negative_aesthetic_score = json_field<double>(r, "negative_aesthetic_score", 2.5);
  set_switch("refiner.switch_at", json_field<double>(r, "switch_at", 0.8), p);
  const std::string name = json_field<std::string>(r, "model", "");
  DIFFUSE_CHECK_ARG(!name.empty(), "field 'refiner.model' must name a model");
  use_refiner(s, "refiner.model", name, p);
}

}  // namespace diffuse::server

// libFuzzer target: an HTTP request body as the server's POST /api/jobs and
// /sdapi/v1/txt2img handlers read it: nlohmann::json::parse (no exceptions,
// like parse_body), the typed field reads, then GenerationParams::validate.
//
// The handlers live inside route lambdas in src/server, so this harness
// mirrors their field reads rather than calling them: int fields accept
// JSON integers inside the type's range only, like json_field in
// src/server/server_state.h (plain get<int>() wraps 4294967360 to 64 and casts
// 1e300 to int with undefined behaviour). The server regression tests in
// tests/server/test_hardening.cpp cover the real handlers.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "pipeline/pipeline.h"

namespace {

using diffuse::ErrorCode;
using nlohmann::json;

template <class T>
T field(const json& j, const char* name, T fallback) {
  if (!j.contains(name) || j[name].is_null()) return fallback;
  const json& v = j[name];
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number()) diffuse::throw_error(ErrorCode::kInvalidArgument, std::string("field '") + name + "' has the wrong type");
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (!(d == std::floor(d) && d >= static_cast<double>(std::numeric_limits<T>::min()) &&
            d <= static_cast<double>(std::numeric_limits<T>::max()) / 2)) {
        diffuse::throw_error(ErrorCode::kInvalidArgument, std::string("field '") + name + "' is out of range");
      }
      return static_cast<T>(d);
    }
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        diffuse::throw_error(ErrorCode::kInvalidArgument, std::string("field '") + name + "' is out of range");
      }
      return static_cast<T>(u);
    }
    int64_t i = v.get<int64_t>();
    if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max()) {
      diffuse::throw_error(ErrorCode::kInvalidArgument, std::string("field '") + name + "' is out of range");
    }
    return static_cast<T>(i);
  } else {
    try {
      return v.get<T>();
    } catch (const json::exception&) {
      diffuse::throw_error(ErrorCode::kInvalidArgument, std::string("field '") + name + "' has the wrong type");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  json body = json::parse(data, data + size, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return 0;  // the server answers 400
  (void)body.dump();  // the handlers echo the body back (r.echo) and store it in history
  try {
    diffuse::GenerationParams p;
    p.prompt = field<std::string>(body, "prompt", "");
    if (body.contains("negative_prompt") && !body["negative_prompt"].is_null()) {
      p.negative_prompt = field<std::string>(body, "negative_prompt", "");
    }
    p.images = field<int>(body, "images", field<int>(body, "batch_size", 1));
    p.seed = field<int64_t>(body, "seed", -1);
    p.steps = field<int>(body, "steps", 0);
    double cfg = field<double>(body, "cfg_scale", -1.0);
    p.cfg_scale = std::isfinite(cfg) && std::fabs(cfg) < 1e30 ? static_cast<float>(cfg) : 1e30f;
    p.sampler = field<std::string>(body, "sampler", "");
    p.schedule = field<std::string>(body, "schedule", "default");
    p.width = field<int>(body, "width", 0);
    p.height = field<int>(body, "height", 0);
    p.clip_skip = field<int>(body, "clip_skip", 1);
    if (body.contains("prompts")) p.prompts = field<std::vector<std::string>>(body, "prompts", {});
    p.validate();
    // What validate accepts must be generatable: check the invariants generate() relies on.
    if (p.width % 8 || p.height % 8 || p.width < 0 || p.height < 0 || p.steps < 0 || p.clip_skip < 1) __builtin_trap();
  } catch (const diffuse::Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) __builtin_trap();
  }
  return 0;
}

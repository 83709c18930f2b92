// Merging LoRA sets into a model's weights (lora.h LoraMerger): each module's
// delta from its factors, in f32 on the weights' device (core ops: matmul,
// broadcasting mul), added to the original weight and cast once.
//
// The formulas: kohya's networks/lora.py and A1111's network_lora.py (up @ down,
// LoCon's Tucker "mid"), LyCORIS' loha.py / lokr.py and A1111's network_hada.py /
// network_lokr.py (Hadamard and Kronecker products, Tucker cores rebuilt as in
// lyco_helpers.make_weight_cp), and DoRA (Liu et al. 2024) as LyCORIS stores it
// (dora_scale along the input or the output axis).
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "adapters/lora.h"
#include "core/error.h"
#include "core/ops.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/weights.h"

namespace diffuse {
namespace {

constexpr size_t kListed = 8;

Tensor f32_on(const Tensor& t, Device device) { return t.to(DType::kF32).contiguous().to(device); }

// [rows, rest]: a factor as the 2-D matrix torch's reshape(size(0), -1) gives.
Tensor as_matrix(const Tensor& t) { return t.reshape({t.dim(0), t.numel() / t.dim(0)}); }

// A Tucker core t [R, R', k...] between wa [R, out] and wb [R', in]:
// result[p, r, k...] = sum_ij t[i, j, k...] wa[i, p] wb[j, r]  -> [out, in, k...]
// (lyco_helpers.make_weight_cp), as wa^T @ t[:, :, k] @ wb for every kernel position.
Tensor tucker(const Tensor& t, const Tensor& wa, const Tensor& wb) {
  const int64_t R = t.dim(0), R2 = t.dim(1), kk = t.numel() / (R * R2);
  const Tensor core = t.reshape({R, R2, kk}).permute({2, 0, 1}).contiguous();          // [kk, R, R']
  const Tensor left = matmul(wa.transpose(0, 1).contiguous(), core);                    // [kk, out, R']
  const Tensor full = matmul(left, wb);                                                 // [kk, out, in]
  Shape shape = {wa.dim(1), wb.dim(1)};
  for (int i = 2; i < t.ndim(); ++i) shape.push_back(t.dim(i));
  return full.permute({1, 2, 0}).contiguous().reshape(shape);                           // [out, in, k...]
}

// kron(a [p, q], b [m, n]) = [p*m, q*n], as a[:, None, :, None] * b[None, :, None, :].
Tensor kron(const Tensor& a, const Tensor& b) {
  const int64_t p = a.dim(0), q = a.dim(1), m = b.dim(0), n = b.dim(1);
  return mul(a.reshape({p, 1, q, 1}), b.reshape({1, m, 1, n})).reshape({p * m, q * n});
}

}  // namespace

Tensor lora_delta(const LoraModule& m, const Shape& target, Device device) {
  auto part = [&](const char* role) { return f32_on(m.parts.at(role), device); };
  auto has = [&](const char* role) { return m.parts.count(role) > 0; };
  Tensor d;
  switch (m.algo) {
    case LoraAlgo::kLora: {
      const Tensor up = as_matrix(part("up"));      // [out, r]
      const Tensor down = as_matrix(part("down"));  // [r, in*k*k] (or [r', in] with mid)
      d = has("mid") ? tucker(part("mid"), up.transpose(0, 1).contiguous(), down) : matmul(up, down);
      break;
    }
    case LoraAlgo::kLoha: {
      auto factor = [&](const char* a, const char* b, const char* t) {
        return has(t) ? as_matrix(tucker(part(t), part(a), part(b))) : matmul(as_matrix(part(a)), as_matrix(part(b)));
      };
      d = mul(factor("w1_a", "w1_b", "t1"), factor("w2_a", "w2_b", "t2"));
      break;
    }
    case LoraAlgo::kLokr: {
      const Tensor w1 = has("w1") ? part("w1") : matmul(part("w1_a"), as_matrix(part("w1_b")));
      Tensor w2;
      if (has("w2")) w2 = as_matrix(part("w2"));
      else if (has("t2")) w2 = as_matrix(tucker(part("t2"), part("w2_a"), part("w2_b")));
      else w2 = matmul(as_matrix(part("w2_a")), as_matrix(part("w2_b")));
      // kron of [a, b] and [c, d*k*k] is the 4-D kron flattened (a conv's kernel stays innermost).
      d = kron(w1, w2);
      break;
    }
    case LoraAlgo::kFull:
      d = part("diff");
      break;
  }
  DIFFUSE_CHECK_ARG(d.numel() == shape_numel(target), "[lora] '" + m.key + "' delta " + shape_str(d.shape()) +
                                                          " does not fit " + shape_str(target));
  return m.scale == 1.0f ? d.reshape(target) : scale(d, m.scale).reshape(target);
}

Tensor dora_delta(const Tensor& weight, const Tensor& delta, const Tensor& dora_scale) {
  // On the host: a norm per output row or input column, which no op computes.
  const Tensor w = weight.to(DType::kF32).to(Device::kCPU).contiguous();
  const Tensor dd = delta.to(DType::kF32).to(Device::kCPU).contiguous();
  const std::vector<float> m = dora_scale.to(DType::kF32).to(Device::kCPU).contiguous().to_f32_vector();
  const int64_t out = w.dim(0), in = w.ndim() > 1 ? w.dim(1) : 1, kk = w.numel() / (out * in);
  // dora_scale [out, 1, ...] rescales rows (PEFT's and newer LyCORIS' wd_on_out);
  // [1, in, ...] rescales input columns (LyCORIS' default, A1111's reading).
  const bool per_out = dora_scale.dim(0) == out && static_cast<int64_t>(m.size()) == out;
  DIFFUSE_CHECK_ARG(per_out || static_cast<int64_t>(m.size()) == in,
                    "[lora] dora_scale " + shape_str(dora_scale.shape()) + " fits neither axis of " + shape_str(w.shape()));
  const float* pw = w.data<float>();
  const float* pd = dd.data<float>();
  std::vector<float> merged(static_cast<size_t>(w.numel()));
  for (size_t i = 0; i < merged.size(); ++i) merged[i] = pw[i] + pd[i];
  const int64_t axis = per_out ? out : in;
  std::vector<double> norm(static_cast<size_t>(axis), 0.0);
  auto axis_of = [&](int64_t i) { return per_out ? i / (in * kk) : (i / kk) % in; };
  for (int64_t i = 0; i < w.numel(); ++i) norm[axis_of(i)] += static_cast<double>(merged[i]) * merged[i];
  std::vector<float> out_v(merged.size());
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int64_t a = axis_of(i);
    // LyCORIS adds torch.finfo(float32).eps to the norm.
    const float factor = static_cast<float>(m[a] / (std::sqrt(norm[a]) + FLT_EPSILON));
    out_v[i] = merged[i] * factor - pw[i];
  }
  return Tensor::from_vector(out_v, w.shape()).to(weight.device());
}

LoraSetKey lora_set_key(const std::vector<LoraUse>& uses) {
  namespace fs = std::filesystem;
  LoraSetKey key;
  for (const LoraUse& u : uses) {
    DIFFUSE_CHECK_ARG(std::isfinite(u.unet_weight) && std::isfinite(u.te_weight),
                      "LoRA '" + u.path + "': its weights must be finite numbers");
    std::error_code ec;
    if (!fs::is_regular_file(u.path, ec)) throw_error(ErrorCode::kNotFound, "LoRA file not found: '" + u.path + "'");
    LoraSetKey::Entry e;
    e.path = fs::canonical(u.path, ec).string();
    if (ec) e.path = u.path;
    e.unet_weight = u.unet_weight;
    e.te_weight = u.te_weight;
    e.size = fs::file_size(u.path, ec);
    e.mtime_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(fs::last_write_time(u.path, ec).time_since_epoch())
                     .count();
    key.entries.push_back(e);
  }
  return key;
}

// ---- the merger --------------------------------------------------------------------

Tensor compact_exact(const Tensor& base) {
  if (base.dtype() != DType::kF32 || base.device() != Device::kCPU) return base;
  const Tensor wide = base.contiguous();
  const size_t bytes = static_cast<size_t>(wide.numel()) * sizeof(float);
  for (DType narrow : {DType::kF16, DType::kBF16}) {
    const Tensor n = wide.to(narrow);
    if (std::memcmp(n.to(DType::kF32).contiguous().raw_data(), wide.raw_data(), bytes) == 0) return n;
  }
  return base;
}

namespace {

const WeightTable& table_of(const LoraModel& model, const std::string& component) {
  if (component == "unet") return model.unet->weights();
  for (const auto& [name, te] : model.text_encoders)
    if (name == component) return te->weights();
  throw_error(ErrorCode::kRuntime, "[lora] the model has no component '" + component + "'");
}

void replace(const LoraModel& model, const std::string& component, const std::string& weight, const Tensor& value) {
  if (component == "unet") return model.unet->replace_weight(weight, value);
  for (const auto& [name, te] : model.text_encoders)
    if (name == component) return te->replace_weight(weight, value);
  throw_error(ErrorCode::kRuntime, "[lora] the model has no component '" + component + "'");
}

std::string listed(const std::vector<std::string>& keys) {
  std::ostringstream ss;
  for (size_t i = 0; i < keys.size() && i < kListed; ++i) ss << (i ? ", " : "") << keys[i];
  if (keys.size() > kListed) ss << ", ... (" << keys.size() - kListed << " more)";
  return ss.str();
}

}  // namespace

void LoraMerger::restore_all(const LoraModel& model) {
  for (const auto& [k, original] : originals_) replace(model, k.first, k.second, original);
  originals_.clear();
}

void LoraMerger::apply(const LoraModel& model, const std::vector<LoraUse>& uses, const LoraSetKey& key) {
  // 1. Read every file and check it against the model: nothing has changed yet.
  std::vector<LoraFile> files;
  files.reserve(uses.size());
  for (const LoraUse& u : uses) files.push_back(read_lora_file(u.path));
  const LoraTargets targets = LoraTargets::of(model);
  std::vector<LoraPlan> plans;
  std::vector<LoraReport> reports;
  for (const LoraFile& f : files) {
    plans.push_back(plan_lora(f, targets, model.family));
    LoraReport r;
    r.name = f.name;
    r.path = f.path;
    r.hash = f.hash;
    r.modules = static_cast<int>(f.modules.size());
    r.matched = static_cast<int>(plans.back().patches.size());
    r.unmatched = plans.back().unmatched;
    r.unknown = f.unknown_keys;
    reports.push_back(std::move(r));
  }

  // What goes into each weight: (module, target, row offset in the target, user weight).
  struct Contribution {
    const LoraModule* module;
    const LoraTarget* target;
    int64_t row = 0;
    float weight = 1.0f;
  };
  std::map<std::pair<std::string, std::string>, std::vector<Contribution>> by_weight;
  for (size_t i = 0; i < plans.size(); ++i) {
    for (const LoraPlan::Patch& p : plans[i].patches) {
      const float w = p.target->component == "unet" ? uses[i].unet_weight : uses[i].te_weight;
      if (w == 0.0f) continue;
      int64_t row = 0;
      for (const LoraTarget::Piece& piece : p.target->pieces) {
        by_weight[{p.target->component, piece.weight}].push_back({p.module, p.target, row, w});
        row += piece.shape[0];
      }
    }
  }

  // 2. Restore what the previous set changed and this one does not, then merge.
  try {
    for (auto it = originals_.begin(); it != originals_.end();) {
      if (by_weight.count(it->first)) {
        ++it;
        continue;
      }
      replace(model, it->first.first, it->first.second, it->second);
      it = originals_.erase(it);
    }
    for (const auto& [k, contributions] : by_weight) {
      const WeightTable& table = table_of(model, k.first);
      auto kept = originals_.find(k);
      const Tensor base = kept != originals_.end() ? kept->second : table.get(k.second);
      const Tensor base32 = base.to(DType::kF32).contiguous();
      Tensor acc = base32;
      for (const Contribution& c : contributions) {
        Tensor d = lora_delta(*c.module, c.target->shape(), base.device());
        if (c.target->pieces.size() > 1) d = d.slice(0, c.row, c.row + base.dim(0)).contiguous();  // this weight's rows
        d = d.reshape(base.shape());
        if (auto ds = c.module->parts.find("dora_scale"); ds != c.module->parts.end()) d = dora_delta(base32, d, ds->second);
        acc = axpby(acc, 1.0f, d, c.weight);
      }
      originals_.emplace(k, kept != originals_.end() ? base : compact_exact(base));
      replace(model, k.first, k.second, acc.to(table.dtype()));
    }
  } catch (...) {
    restore_all(model);
    key_ = {};
    reports_.clear();
    throw;
  }
  key_ = key;
  reports_ = std::move(reports);
}

size_t LoraMerger::kept_bytes() const {
  size_t n = 0;
  for (const auto& [k, t] : originals_) n += static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
  return n;
}

std::vector<std::string> LoraMerger::warnings() const {
  std::vector<std::string> out;
  for (const LoraReport& r : reports_) {
    if (!r.unmatched.empty())
      out.push_back("LoRA '" + r.name + "': " + std::to_string(r.unmatched.size()) + " of " +
                    std::to_string(r.modules) + " modules match nothing in this model and were not applied: " +
                    listed(r.unmatched));
    if (!r.unknown.empty())
      out.push_back("LoRA '" + r.name + "': " + std::to_string(r.unknown.size()) +
                    " tensors of no known LoRA / LyCORIS format were ignored: " + listed(r.unknown));
  }
  return out;
}

std::string LoraMerger::infotext_hashes() const {
  std::string out;
  for (const LoraReport& r : reports_) {
    std::string name;
    for (char c : r.name)
      if (c != ':' && c != ',') name += c;  // A1111 strips both from the alias
    out += (out.empty() ? "" : ", ") + name + ": " + r.hash;
  }
  return out;
}

}  // namespace diffuse

// Reading LoRA / LyCORIS files (lora.h): which tensor is which factor of which
// module, the scale each format gives, and A1111's file hash.
//
// Names follow kohya's sd-scripts (networks/lora.py), LyCORIS
// (lycoris/modules/{locon,loha,lokr,full}.py), A1111's extensions-builtin/Lora
// (network_*.py: which roles make which module type) and diffusers / PEFT
// (loaders/lora_pipeline.py, utils/peft_utils.py: lora_adapter_metadata).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "adapters/lora.h"
#include "core/error.h"
#include "io/file_io.h"
#include "io/sha256.h"

namespace diffuse {
namespace {

constexpr size_t kListed = 8;  // keys named in one message

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// ---- the tables ------------------------------------------------------------------

// Which factor a tensor is, by the end of its key. kAny rows (alpha,
// dora_scale) go with any algorithm. The longest matching suffix wins.
enum class PartAlgo { kAny, kLora, kLoha, kLokr, kFull };
struct PartRow {
  const char* suffix;
  const char* role;
  PartAlgo algo;
};
constexpr PartRow kPartRows[] = {
    // kohya / A1111 / LyCORIS LoCon
    {".lora_down.weight", "down", PartAlgo::kLora},
    {".lora_up.weight", "up", PartAlgo::kLora},
    {".lora_mid.weight", "mid", PartAlgo::kLora},
    // PEFT (diffusers >= 0.22)
    {".lora_A.weight", "down", PartAlgo::kLora},
    {".lora_B.weight", "up", PartAlgo::kLora},
    // older diffusers: LoRACompatibleLinear / text-encoder LoRA / attention processors
    {".lora.down.weight", "down", PartAlgo::kLora},
    {".lora.up.weight", "up", PartAlgo::kLora},
    {".lora_linear_layer.down.weight", "down", PartAlgo::kLora},
    {".lora_linear_layer.up.weight", "up", PartAlgo::kLora},
    {"_lora.down.weight", "down", PartAlgo::kLora},
    {"_lora.up.weight", "up", PartAlgo::kLora},
    // LyCORIS LoHa
    {".hada_w1_a", "w1_a", PartAlgo::kLoha},
    {".hada_w1_b", "w1_b", PartAlgo::kLoha},
    {".hada_w2_a", "w2_a", PartAlgo::kLoha},
    {".hada_w2_b", "w2_b", PartAlgo::kLoha},
    {".hada_t1", "t1", PartAlgo::kLoha},
    {".hada_t2", "t2", PartAlgo::kLoha},
    // LyCORIS LoKr
    {".lokr_w1", "w1", PartAlgo::kLokr},
    {".lokr_w1_a", "w1_a", PartAlgo::kLokr},
    {".lokr_w1_b", "w1_b", PartAlgo::kLokr},
    {".lokr_w2", "w2", PartAlgo::kLokr},
    {".lokr_w2_a", "w2_a", PartAlgo::kLokr},
    {".lokr_w2_b", "w2_b", PartAlgo::kLokr},
    {".lokr_t2", "t2", PartAlgo::kLokr},
    // LyCORIS full fine-tune difference
    {".diff", "diff", PartAlgo::kFull},
    // any algorithm
    {".alpha", "alpha", PartAlgo::kAny},
    {".dora_scale", "dora_scale", PartAlgo::kAny},
};

// Which component a module key names, by its start (first match wins, so
// "text_encoder_2." precedes "text_encoder."). A key with none of these is a
// UNet module (old diffusers files wrote bare "down_blocks.0...").
struct PrefixRow {
  const char* prefix;
  const char* component;
};
constexpr PrefixRow kPrefixRows[] = {
    {"lora_unet_", "unet"},
    {"lora_te1_", "text_encoder"},
    {"lora_te2_", "text_encoder_2"},
    {"lora_te_", "text_encoder"},
    {"unet.", "unet"},
    {"text_encoder_2.", "text_encoder_2"},
    {"text_encoder.", "text_encoder"},
};

const PartRow* part_row(const std::string& key) {
  const PartRow* best = nullptr;
  for (const PartRow& r : kPartRows) {
    const size_t n = std::strlen(r.suffix);
    if (key.size() > n && ends_with(key, r.suffix) && (!best || n > std::strlen(best->suffix))) best = &r;
  }
  return best;
}

// Attention-processor names (".../attn1.processor.to_q_lora.down.weight") name
// the module as diffusers' AttnProcessor did: drop "processor", to_out is to_out.0.
std::string normalise_processor_module(std::string module) {
  const std::string proc = ".processor.";
  if (const size_t at = module.find(proc); at != std::string::npos) module.erase(at, proc.size() - 1);
  if (ends_with(module, ".to_out")) module += ".0";
  return module;
}

std::string shape_of(const Tensor& t) { return shape_str(t.shape()); }

[[noreturn]] void bad_file(const std::string& path, const std::string& what) {
  throw_error(ErrorCode::kIo, "LoRA '" + path + "': " + what);
}

// ---- PEFT metadata -------------------------------------------------------------------

// diffusers' lora_adapter_metadata: "<component>.r", "<component>.lora_alpha",
// "<component>.rank_pattern", ... (or the same keys without a prefix).
struct PeftConfig {
  bool present = false;
  nlohmann::json meta;
  const nlohmann::json* get(const std::string& component, const std::string& field) const {
    for (const std::string& k : {component + "." + field, field}) {
      auto it = meta.find(k);
      if (it != meta.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  }
};

PeftConfig peft_config(const std::map<std::string, std::string>& metadata, const std::string& path) {
  PeftConfig c;
  auto it = metadata.find("lora_adapter_metadata");
  if (it == metadata.end()) return c;
  try {
    c.meta = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    bad_file(path, std::string("its lora_adapter_metadata is not JSON: ") + e.what());
  }
  if (!c.meta.is_object()) bad_file(path, "its lora_adapter_metadata is not a JSON object");
  c.present = true;
  return c;
}

// PEFT's get_pattern_key: a pattern names the module itself or a dotted suffix of it.
const nlohmann::json* pattern_value(const nlohmann::json* patterns, const std::string& module) {
  if (!patterns || !patterns->is_object()) return nullptr;
  for (auto it = patterns->begin(); it != patterns->end(); ++it) {
    if (module == it.key() || ends_with(module, "." + it.key())) return &it.value();
  }
  return nullptr;
}

double number(const nlohmann::json& j, const std::string& path, const std::string& what) {
  if (!j.is_number()) bad_file(path, "lora_adapter_metadata " + what + " is not a number: " + j.dump());
  return j.get<double>();
}

// The scale PEFT gives a module: lora_alpha / r (or / sqrt(r) with use_rslora),
// each from its pattern when one names the module.
std::optional<float> peft_scale(const PeftConfig& c, const LoraModule& m, const std::string& path) {
  if (!c.present) return std::nullopt;
  const std::string& comp = m.component;
  const nlohmann::json* r = pattern_value(c.get(comp, "rank_pattern"), m.module);
  if (!r) r = c.get(comp, "r");
  const nlohmann::json* alpha = pattern_value(c.get(comp, "alpha_pattern"), m.module);
  if (!alpha) alpha = c.get(comp, "lora_alpha");
  if (!r && !alpha) return std::nullopt;
  const double rank = r ? number(*r, path, comp + ".r") : static_cast<double>(m.parts.at("down").dim(0));
  const double a = alpha ? number(*alpha, path, comp + ".lora_alpha") : rank;
  const nlohmann::json* rs = c.get(comp, "use_rslora");
  const bool rslora = rs && rs->is_boolean() && rs->get<bool>();
  if (!(rank > 0)) bad_file(path, "lora_adapter_metadata gives rank " + std::to_string(rank) + " for " + m.key);
  return static_cast<float>(a / (rslora ? std::sqrt(rank) : rank));
}

// ---- shapes of each algorithm ----------------------------------------------------------

Shape tail(const Shape& s, size_t from) { return Shape(s.begin() + static_cast<long>(from), s.end()); }
int64_t numel_from(const Shape& s, size_t from) {
  int64_t n = 1;
  for (size_t i = from; i < s.size(); ++i) n *= s[i];
  return n;
}

// Checks that a module's factors agree and returns its delta shape; throws kIo naming the key.
Shape delta_shape_of(const LoraModule& m, const std::string& path) {
  auto has = [&](const char* r) { return m.parts.count(r) > 0; };
  auto part = [&](const char* r) -> const Tensor& { return m.parts.at(r); };
  auto need = [&](std::initializer_list<const char*> roles) {
    for (const char* r : roles)
      if (!has(r)) bad_file(path, "module '" + m.key + "' (" + lora_algo_name(m.algo) + ") has no " + r + " factor");
  };
  auto fail = [&](const std::string& what) -> Shape { bad_file(path, "module '" + m.key + "': " + what); };
  auto need_rank = [&](const char* r, std::initializer_list<int> ranks) {
    const int n = part(r).ndim();
    if (std::find(ranks.begin(), ranks.end(), n) == ranks.end())
      fail(std::string(r) + " " + shape_of(part(r)) + " has an unexpected rank");
  };
  // A Tucker core t [R, R', kh, kw] between wa [R, out] and wb [R', in] -> [out, in, kh, kw].
  auto tucker = [&](const char* t, const char* wa, const char* wb) -> Shape {
    need_rank(t, {3, 4, 5});
    need_rank(wa, {2});
    need_rank(wb, {2});
    const Shape& ts = part(t).shape();
    if (part(wa).dim(0) != ts[0] || part(wb).dim(0) != ts[1])
      fail(std::string(t) + " " + shape_of(part(t)) + " does not fit " + wa + " " + shape_of(part(wa)) + " and " + wb +
           " " + shape_of(part(wb)));
    Shape s = {part(wa).dim(1), part(wb).dim(1)};
    for (size_t i = 2; i < ts.size(); ++i) s.push_back(ts[i]);
    return s;
  };
  // wa [out, r] @ wb [r, ...] -> [out, ...]
  auto product = [&](const char* wa, const char* wb) -> Shape {
    need_rank(wa, {2, 4});
    const Tensor& a = part(wa);
    const Tensor& b = part(wb);
    if (a.ndim() == 4 && numel_from(a.shape(), 2) != 1) fail(std::string(wa) + " " + shape_of(a) + " must be 1x1");
    if (b.ndim() < 2 || a.dim(1) != b.dim(0))
      fail(std::string(wa) + " " + shape_of(a) + " does not fit " + wb + " " + shape_of(b));
    Shape s = {a.dim(0)};
    for (int64_t d : tail(b.shape(), 1)) s.push_back(d);
    return s;
  };
  switch (m.algo) {
    case LoraAlgo::kLora: {
      need({"down", "up"});
      if (!has("mid")) return product("up", "down");
      // LoCon's Tucker form: up [out, r] . mid [r, r', kh, kw] . down [r', in] (1x1).
      const Tensor& down = part("down");
      if (down.ndim() == 4 && numel_from(down.shape(), 2) != 1)
        fail("down " + shape_of(down) + " must be 1x1 with a mid factor");
      need_rank("up", {2, 4});
      const Shape& mid = part("mid").shape();
      if (mid.size() != 4 || mid[0] != part("up").dim(1) || mid[1] != down.dim(0))
        fail("mid " + shape_of(part("mid")) + " does not fit up " + shape_of(part("up")) + " and down " + shape_of(down));
      return {part("up").dim(0), down.dim(1), mid[2], mid[3]};
    }
    case LoraAlgo::kLoha: {
      need({"w1_a", "w1_b", "w2_a", "w2_b"});
      if (has("t1") != has("t2")) fail("has one Tucker core of two (hada_t1, hada_t2)");
      const Shape s1 = has("t1") ? tucker("t1", "w1_a", "w1_b") : product("w1_a", "w1_b");
      const Shape s2 = has("t2") ? tucker("t2", "w2_a", "w2_b") : product("w2_a", "w2_b");
      if (s1 != s2) fail("its two Hadamard factors have shapes " + shape_str(s1) + " and " + shape_str(s2));
      return s1;
    }
    case LoraAlgo::kLokr: {
      Shape s1, s2;
      if (has("w1")) {
        need_rank("w1", {2});
        s1 = part("w1").shape();
      } else {
        need({"w1_a", "w1_b"});
        s1 = product("w1_a", "w1_b");
        if (s1.size() != 2) fail("w1_b " + shape_of(part("w1_b")) + " must be 2-D");
      }
      if (has("w2")) {
        need_rank("w2", {2, 4});
        s2 = part("w2").shape();
      } else if (has("t2")) {
        need({"w2_a", "w2_b"});
        s2 = tucker("t2", "w2_a", "w2_b");
      } else {
        need({"w2_a", "w2_b"});
        s2 = product("w2_a", "w2_b");
      }
      Shape s = {s1[0] * s2[0], s1[1] * s2[1]};
      for (int64_t d : tail(s2, 2)) s.push_back(d);
      return s;
    }
    case LoraAlgo::kFull:
      need({"diff"});
      return part("diff").shape();
  }
  return {};
}

// alpha / dim, where the format defines dim; 1 otherwise (A1111's calc_scale).
float scale_of(const LoraModule& m, const std::optional<float>& alpha, const PeftConfig& peft, const std::string& path) {
  auto dim0 = [&](const char* r) -> std::optional<int64_t> {
    auto it = m.parts.find(r);
    return it == m.parts.end() ? std::nullopt : std::optional<int64_t>(it->second.dim(0));
  };
  std::optional<int64_t> dim;
  switch (m.algo) {
    case LoraAlgo::kLora:
      dim = dim0("down");
      if (!alpha) {
        if (std::optional<float> s = peft_scale(peft, m, path)) return *s;
        return 1.0f;  // kohya: no alpha means alpha = rank
      }
      break;
    case LoraAlgo::kLoha: dim = dim0("w1_b"); break;
    case LoraAlgo::kLokr: dim = dim0("w2_b") ? dim0("w2_b") : dim0("w1_b"); break;
    case LoraAlgo::kFull: return 1.0f;
  }
  if (!alpha || !dim || *dim <= 0) return 1.0f;
  return static_cast<float>(static_cast<double>(*alpha) / static_cast<double>(*dim));
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const char* lora_algo_name(LoraAlgo a) {
  switch (a) {
    case LoraAlgo::kLora: return "LoRA";
    case LoraAlgo::kLoha: return "LoHa";
    case LoraAlgo::kLokr: return "LoKr";
    case LoraAlgo::kFull: return "full";
  }
  return "?";
}

std::string addnet_hash(const std::string& path) {
  std::shared_ptr<MappedFile> f = MappedFile::open(path);
  const uint8_t* d = f->data();
  if (f->size() < 8) bad_file(path, "is " + std::to_string(f->size()) + " bytes, shorter than a safetensors header");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | d[i];
  if (n > f->size() - 8) bad_file(path, "its header length " + std::to_string(n) + " runs past the end of the file");
  Sha256 h;
  h.update(d + 8 + n, f->size() - 8 - n);
  return h.hex_digest();
}

std::string lora_file_hash(const std::string& path, const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find("sshs_model_hash");
  std::string full;
  if (it != metadata.end() && !it->second.empty()) {
    full = lower(it->second);
  } else if (lower(std::filesystem::path(path).extension().string()) == ".safetensors") {
    full = addnet_hash(path);
  } else {
    full = sha256_file(path);
  }
  return full.substr(0, 12);
}

LoraFile read_lora_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw_error(ErrorCode::kNotFound, "LoRA file not found: '" + path + "'");
  Checkpoint ck;
  try {
    ck = load_checkpoint(path);
  } catch (const Error& e) {
    throw_error(e.code() == ErrorCode::kNotFound ? e.code() : ErrorCode::kIo,
                std::string("LoRA '") + path + "' cannot be read: " + e.what());
  }
  LoraFile file;
  file.path = path;
  file.name = fs::path(path).stem().string();
  file.metadata = ck.metadata;
  const PeftConfig peft = peft_config(ck.metadata, path);

  // Group the tensors by module key (the key without its factor suffix).
  struct Pending {
    std::map<std::string, Tensor> parts;
    std::set<PartAlgo> algos;
    bool processor = false;
  };
  std::map<std::string, Pending> pending;
  for (const auto& [key, t] : ck.tensors) {
    const PartRow* row = part_row(key);
    if (!row) {
      file.unknown_keys.push_back(key);
      continue;
    }
    if (!is_floating(t.dtype()))
      bad_file(path, "'" + key + "' has dtype " + dtype_name(t.dtype()) + ", expected a floating type");
    const std::string module_key = key.substr(0, key.size() - std::strlen(row->suffix));
    Pending& p = pending[module_key];
    if (!p.parts.emplace(row->role, t).second)
      bad_file(path, "module '" + module_key + "' has two " + row->role + " factors");
    if (row->algo != PartAlgo::kAny) p.algos.insert(row->algo);
    p.processor |= row->suffix[0] == '_';
  }

  for (auto& [module_key, p] : pending) {
    LoraModule m;
    m.key = module_key;
    if (p.algos.size() > 1) bad_file(path, "module '" + module_key + "' mixes the factors of several algorithms");
    if (p.algos.empty()) {  // only alpha / dora_scale: nothing to apply
      for (const auto& [role, t] : p.parts) file.unknown_keys.push_back(module_key + "." + role);
      continue;
    }
    switch (*p.algos.begin()) {
      case PartAlgo::kLoha: m.algo = LoraAlgo::kLoha; break;
      case PartAlgo::kLokr: m.algo = LoraAlgo::kLokr; break;
      case PartAlgo::kFull: m.algo = LoraAlgo::kFull; break;
      default: m.algo = LoraAlgo::kLora; break;
    }
    m.component = "unet";
    m.module = module_key;
    for (const PrefixRow& r : kPrefixRows) {
      if (starts_with(module_key, r.prefix)) {
        m.component = r.component;
        m.module = module_key.substr(std::strlen(r.prefix));
        break;
      }
    }
    if (p.processor) m.module = normalise_processor_module(m.module);
    std::optional<float> alpha;
    if (auto it = p.parts.find("alpha"); it != p.parts.end()) {
      if (it->second.numel() != 1)
        bad_file(path, "'" + module_key + ".alpha' has shape " + shape_of(it->second) + ", expected a scalar");
      alpha = it->second.to(DType::kF32).item();
      if (!std::isfinite(*alpha)) bad_file(path, "'" + module_key + ".alpha' is not a finite number");
      p.parts.erase(it);
    }
    m.parts = std::move(p.parts);
    m.delta_shape = delta_shape_of(m, path);
    m.scale = scale_of(m, alpha, peft, path);
    if (!std::isfinite(m.scale)) bad_file(path, "module '" + module_key + "' has a scale that is not finite");
    file.modules.push_back(std::move(m));
  }
  if (file.modules.empty()) {
    std::ostringstream ss;
    ss << "LoRA '" << path << "' holds no LoRA / LyCORIS module: ";
    if (ck.tensors.empty()) ss << "it has no tensors at the top level";
    else ss << "none of its " << ck.tensors.size() << " tensors has a known key";
    size_t i = 0;
    for (const auto& [key, t] : ck.tensors) {
      if (i++ == kListed) break;
      ss << (i == 1 ? " (" : ", ") << key;
    }
    if (!ck.tensors.empty()) ss << (ck.tensors.size() > kListed ? ", ...)" : ")");
    throw_error(ErrorCode::kInvalidArgument, ss.str());
  }
  file.hash = lora_file_hash(path, file.metadata);
  return file;
}

}  // namespace diffuse

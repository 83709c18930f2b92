// Which weight a LoRA module patches (lora.h LoraTargets), and whether a file
// fits a model at all (plan_lora, guess_lora_family).
//
// Every name comes from the model: the flattened (kohya) name of a module is
// its diffusers name with '.' -> '_' (sd-scripts' lora.py builds its names the
// same way from the diffusers modules it trains); SDXL kohya files name UNet
// modules in the LDM/SGM layout, whose names the UNet key table
// (models/unet_keys.h) gives; OpenCLIP text-encoder names come from the
// single-file rule table (models/keymap.h). No name is written down here.
#include <algorithm>
#include <sstream>

#include "adapters/lora.h"
#include "core/error.h"
#include "models/clip_text.h"
#include "models/family_spec.h"
#include "models/keymap.h"
#include "models/unet.h"
#include "models/unet_keys.h"

namespace diffuse {
namespace {

constexpr size_t kListed = 8;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

std::string flatten(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

// "x.weight" of a linear or conv weight -> "x"; "" for anything else.
std::string module_of(const std::string& name, const Shape& shape) {
  const std::string suffix = ".weight";
  if (!ends_with(name, suffix) || (shape.size() != 2 && shape.size() != 4)) return "";
  return name.substr(0, name.size() - suffix.size());
}

// The OpenCLIP per-layer rows of clip_openclip_rules() instantiated for layer
// `layer`: (OpenCLIP module name, the diffusers weight names it becomes).
std::vector<std::pair<std::string, std::vector<std::string>>> openclip_modules(int layer) {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (const KeyRule& rule : clip_openclip_rules()) {
    std::string key = rule.source;
    if (key.find(".#.") == std::string::npos) continue;
    key.replace(key.find('#'), 1, std::to_string(layer));
    if (const size_t star = key.find('*'); star != std::string::npos) key.replace(star, 1, "weight");
    std::string module;
    if (ends_with(key, ".weight")) module = key.substr(0, key.size() - 7);
    else if (ends_with(key, "_weight")) module = key.substr(0, key.size() - 7);
    else continue;
    std::vector<std::string> targets;
    for (const RenamedKey& r : apply_key_rules(clip_openclip_rules(), key)) targets.push_back(r.name);
    out.emplace_back(module, targets);
  }
  return out;
}

std::string fit_problem(const LoraModule& m, const LoraTarget& t) {
  const Shape want = t.shape();
  const std::string weight = t.pieces.size() == 1 ? t.pieces[0].weight : t.pieces[0].weight + " (+" +
                                                                              std::to_string(t.pieces.size() - 1) + ")";
  if (m.delta_shape.empty() || m.delta_shape[0] != want[0] || shape_numel(m.delta_shape) != shape_numel(want))
    return "'" + m.key + "' changes a " + shape_str(m.delta_shape) + " weight, but the model's '" + weight + "' is " +
           shape_str(want);
  if (auto it = m.parts.find("dora_scale"); it != m.parts.end()) {
    const int64_t n = it->second.numel();
    if (t.pieces.size() != 1) return "'" + m.key + "': DoRA on the fused weights " + weight + " is not supported";
    if (n != want[0] && (want.size() < 2 || n != want[1]))
      return "'" + m.key + "' has a dora_scale " + shape_str(it->second.shape()) + " that fits neither axis of '" +
             weight + "' " + shape_str(want);
  }
  return "";
}

struct Fit {
  int named = 0, fitting = 0;
};
Fit fit_of(const LoraFile& file, const LoraTargets& targets) {
  Fit f;
  for (const LoraModule& m : file.modules) {
    const LoraTarget* t = targets.find(m.component, m.module);
    if (!t) continue;
    ++f.named;
    f.fitting += fit_problem(m, *t).empty() ? 1 : 0;
  }
  return f;
}

std::string family_label(Family f) {
  return std::string(family_name(f)) + " (" + family_spec(f).title + ")";
}

}  // namespace

Shape LoraTarget::shape() const {
  Shape s = pieces.at(0).shape;
  for (size_t i = 1; i < pieces.size(); ++i) s[0] += pieces[i].shape[0];
  return s;
}

LoraTargets::LoraTargets(const std::vector<Component>& components) {
  for (const Component& c : components) {
    tables_[c.name];
    std::map<std::string, Shape> weights;
    for (const auto& [name, shape] : c.specs) weights[name] = shape;
    auto single = [&](const std::string& name) {
      LoraTarget t;
      t.component = c.name;
      t.pieces.push_back({name, weights.at(name)});
      return t;
    };
    for (const auto& [name, shape] : c.specs) {
      const std::string module = module_of(name, shape);
      if (module.empty()) continue;
      add(c.name, flatten(module), single(name));
      if (starts_with(module, "text_model.")) add(c.name, flatten(module.substr(11)), single(name));
    }
    if (c.unet) {
      // The same weights under their LDM names (SDXL kohya files): unet_ldm_tensors
      // lists the config's tensors in expected_tensors' order.
      const auto diffusers = UNet::expected_tensors(*c.unet);
      const auto ldm = unet_ldm_tensors(*c.unet);
      for (size_t i = 0; i < ldm.size() && i < diffusers.size(); ++i) {
        const std::string module = module_of(ldm[i].first, ldm[i].second);
        if (!module.empty() && weights.count(diffusers[i].first)) add(c.name, flatten(module), single(diffusers[i].first));
      }
    }
    for (int layer = 0; layer < c.text_layers; ++layer) {
      for (const auto& [module, names] : openclip_modules(layer)) {
        LoraTarget t;
        t.component = c.name;
        for (const std::string& n : names) {
          auto it = weights.find(n);
          if (it == weights.end() || it->second.size() != 2) break;
          t.pieces.push_back({n, it->second});
        }
        if (t.pieces.size() != names.size() || t.pieces.empty()) continue;
        add(c.name, flatten(module), t);
        add(c.name, "model_" + flatten(module), t);
      }
    }
  }
}

void LoraTargets::add(const std::string& component, const std::string& flat, LoraTarget target) {
  if (ambiguous_[component].count(flat)) return;
  auto& table = tables_[component];
  auto [it, fresh] = table.emplace(flat, target);
  if (fresh) return;
  auto same = [](const LoraTarget& a, const LoraTarget& b) {
    if (a.pieces.size() != b.pieces.size()) return false;
    for (size_t i = 0; i < a.pieces.size(); ++i)
      if (a.pieces[i].weight != b.pieces[i].weight) return false;
    return true;
  };
  if (same(it->second, target)) return;
  ambiguous_[component].insert(flat);  // two weights flatten to one name: neither is meant
  table.erase(it);
}

LoraTargets LoraTargets::of(const LoraModel& model) {
  std::vector<Component> components;
  if (model.unet) components.push_back({"unet", model.unet->weights().specs(), &model.unet->config(), 0});
  for (const auto& [name, te] : model.text_encoders)
    components.push_back({name, te->weights().specs(), nullptr, te->config().num_hidden_layers});
  return LoraTargets(components);
}

const LoraTarget* LoraTargets::find(const std::string& component, const std::string& module) const {
  auto t = tables_.find(component);
  if (t == tables_.end()) return nullptr;
  auto it = t->second.find(flatten(module));
  return it == t->second.end() ? nullptr : &it->second;
}

std::optional<Family> guess_lora_family(const LoraFile& file) {
  struct Score {
    Family family;
    Fit fit;
  };
  std::vector<Score> scores;
  for (const FamilySpec& spec : family_specs()) {
    if (spec.variant != Variant::kBase) continue;
    std::vector<LoraTargets::Component> comps;
    comps.push_back({"unet", UNet::expected_tensors(spec.unet), &spec.unet, 0});
    for (const TextEncoderSpec& te : spec.text_encoders)
      comps.push_back({te.folder, ClipTextModel::expected_tensors(te.config), nullptr, te.config.num_hidden_layers});
    scores.push_back({spec.family, fit_of(file, LoraTargets(comps))});
  }
  const int n = static_cast<int>(file.modules.size());
  // First the published architecture every module fits by name and shape, then
  // the one whose names alone cover the file, when only one does.
  for (const Score& s : scores)
    if (s.fit.fitting == n && n > 0) return s.family;
  std::optional<Family> best;
  int best_named = -1, ties = 0;
  for (const Score& s : scores) {
    if (s.fit.named > best_named) {
      best_named = s.fit.named;
      best = s.family;
      ties = 0;
    } else if (s.fit.named == best_named) {
      ++ties;
    }
  }
  if (ties == 0 && best_named * 10 >= n * 9) return best;
  return std::nullopt;
}

LoraPlan plan_lora(const LoraFile& file, const LoraTargets& targets, Family family) {
  LoraPlan plan;
  std::vector<std::string> misfits;
  for (const LoraModule& m : file.modules) {
    const LoraTarget* t = targets.find(m.component, m.module);
    if (!t) {
      plan.unmatched.push_back(m.key);
      continue;
    }
    const std::string problem = fit_problem(m, *t);
    if (!problem.empty()) {
      misfits.push_back(problem);
      continue;
    }
    plan.patches.push_back({&m, t});
  }
  const size_t total = file.modules.size(), bad = plan.unmatched.size() + misfits.size();
  if (bad == 0) return plan;

  const std::string who = "LoRA '" + file.name + "' (" + file.path + ")";
  const std::optional<Family> guess = guess_lora_family(file);
  if (plan.patches.empty() || bad * 2 > total || (guess && *guess != family)) {
    std::ostringstream ss;
    ss << who << " is not for this " << family_label(family) << " model";
    if (guess && *guess != family) ss << ": it is a LoRA for " << family_label(*guess);
    ss << ". Of its " << total << " modules, " << plan.unmatched.size() << " name no module of the model and "
       << misfits.size() << " have other shapes";
    if (!misfits.empty()) ss << " (" << misfits[0] << ")";
    else if (!plan.unmatched.empty()) ss << " (e.g. '" << plan.unmatched[0] << "')";
    ss << "; nothing was applied";
    throw_error(ErrorCode::kInvalidArgument, ss.str());
  }
  if (!misfits.empty()) {
    std::ostringstream ss;
    ss << who << ": " << misfits[0];
    if (misfits.size() > 1) ss << " (and " << misfits.size() - 1 << " more modules that do not fit";
    for (size_t i = 1; i < misfits.size() && i < kListed; ++i) ss << (i == 1 ? ": " : "; ") << misfits[i];
    if (misfits.size() > 1) ss << (misfits.size() > kListed ? "; ...)" : ")");
    ss << "; nothing was applied";
    throw_error(ErrorCode::kInvalidArgument, ss.str());
  }
  return plan;
}

}  // namespace diffuse

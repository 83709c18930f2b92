// Port of AUTOMATIC1111 modules/processing.py:create_infotext (writer) and
// modules/infotext_utils.py:parse_generation_parameters (reader).
#include "io/infotext.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace diffuse {
namespace {

// Old combined sampler names ended in the scheduler (pre-1.9, e.g. "DPM++ 2M Karras").
constexpr const char* kLegacySchedulerSuffixes[] = {"Karras", "Exponential", "Polyexponential", "SGM Uniform"};

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Python's \w for str patterns also matches non-ASCII letters; any byte of a
// multi-byte UTF-8 sequence is treated as a word character.
bool is_word(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return std::isalnum(u) || c == '_' || u >= 0x80;
}
bool is_key_char(char c) { return is_word(c) || c == ' ' || c == '-' || c == '/'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

// re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', line)
std::vector<std::pair<std::string, std::string>> find_params(const std::string& line) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t n = line.size(), i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && is_space(line[j])) ++j;
    size_t k = j;
    if (k < n && is_word(line[k])) {
      ++k;
      while (k < n && is_key_char(line[k])) ++k;
    }
    // \w[\w \-/]+ needs two characters (not bytes: count UTF-8 lead bytes).
    size_t chars = 0;
    for (size_t c = j; c < k; ++c) chars += (static_cast<unsigned char>(line[c]) & 0xc0) != 0x80;
    if (chars < 2 || k >= n || line[k] != ':') {
      ++i;  // no match here: findall tries the next position
      continue;
    }
    std::string key = line.substr(j, k - j);
    size_t v = k + 1;
    while (v < n && is_space(line[v])) ++v;
    // Quoted alternative first: a full JSON-ish string followed by ',' or end.
    if (v < n && line[v] == '"') {
      size_t p = v + 1;
      bool closed = false;
      while (p < n) {
        if (line[p] == '\\' && p + 1 < n) {
          p += 2;
        } else if (line[p] == '"') {
          closed = true;
          break;
        } else if (line[p] == '\\') {
          break;
        } else {
          ++p;
        }
      }
      if (closed && p > v + 1 && (p + 1 == n || line[p + 1] == ',')) {
        out.emplace_back(key, line.substr(v, p + 1 - v));
        i = p + 1 < n ? p + 2 : n;
        continue;
      }
    }
    size_t comma = line.find(',', v);
    size_t end = comma == std::string::npos ? n : comma;
    out.emplace_back(key, line.substr(v, end - v));
    // An empty match at the end of the line is where findall stops too.
    i = comma == std::string::npos ? n : comma + 1;
  }
  return out;
}

std::string unquote(const std::string& v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
    try {
      nlohmann::json j = nlohmann::json::parse(v);
      if (j.is_string()) return j.get<std::string>();
    } catch (const nlohmann::json::exception&) {
    }
  }
  return v;
}

template <class T>
bool parse_number(const std::string& s, T* out) {
  std::string t = trim(s);
  if (t.empty()) return false;
  const char* b = t.data();
  if (*b == '+') ++b;
  auto [p, ec] = std::from_chars(b, t.data() + t.size(), *out);
  return ec == std::errc() && p == t.data() + t.size();
}

}  // namespace

std::string infotext_quote(const std::string& value) {
  if (value.find_first_of(",:\n") == std::string::npos) return value;
  // json.dumps(value, ensure_ascii=False): escape quotes, backslashes and
  // control characters only.
  std::string out = "\"";
  for (char c : value) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string infotext_number(double value) {
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15)
    return std::to_string(static_cast<int64_t>(value));
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, p);
}

std::string format_infotext(const InfotextFields& f) {
  std::vector<std::pair<std::string, std::string>> params;
  auto add = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) params.emplace_back(k, v);
  };
  add("Steps", std::to_string(f.steps));
  add("Sampler", f.sampler);
  add("Schedule type", f.schedule_type);
  add("CFG scale", infotext_number(f.cfg_scale));
  add("Seed", std::to_string(f.seed));
  add("Size", std::to_string(f.width) + "x" + std::to_string(f.height));
  add("Model hash", f.model_hash);
  add("Model", f.model);
  add("VAE hash", f.vae_hash);
  add("VAE", f.vae);
  if (f.variation_seed) add("Variation seed", std::to_string(*f.variation_seed));
  if (f.variation_seed_strength) add("Variation seed strength", infotext_number(*f.variation_seed_strength));
  if (f.denoising_strength) add("Denoising strength", infotext_number(*f.denoising_strength));
  if (f.clip_skip > 1) add("Clip skip", std::to_string(f.clip_skip));
  if (f.ensd) add("ENSD", std::to_string(*f.ensd));
  add("RNG", f.rng);
  for (const auto& [k, v] : f.extra) add(k, v);
  add("Version", f.version);

  std::string line;
  for (const auto& [k, v] : params) {
    if (!line.empty()) line += ", ";
    line += k + ": " + infotext_quote(v);
  }
  std::string text = f.prompt;
  if (!f.negative_prompt.empty()) text += "\nNegative prompt: " + f.negative_prompt;
  text += "\n" + line;
  return trim(text);
}

InfotextFields parse_infotext(const std::string& text) {
  InfotextFields f;
  f.sampler.clear();
  std::vector<std::string> lines;
  std::string stripped = trim(text);
  for (size_t start = 0;;) {
    size_t nl = stripped.find('\n', start);
    lines.push_back(stripped.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  std::string last = lines.back();
  lines.pop_back();
  auto params = find_params(last);
  if (params.size() < 3) {
    lines.push_back(last);
    params.clear();
  }
  bool done_with_prompt = false;
  for (std::string line : lines) {
    line = trim(line);
    if (line.rfind("Negative prompt:", 0) == 0) {
      done_with_prompt = true;
      line = trim(line.substr(16));
    }
    std::string& target = done_with_prompt ? f.negative_prompt : f.prompt;
    target += (target.empty() ? "" : "\n") + line;
  }

  bool have_schedule = false;
  for (auto& [key, raw] : params) {
    std::string v = unquote(raw);
    int64_t i = 0;
    double d = 0;
    bool used = true;
    if (key == "Steps" && parse_number(v, &i)) f.steps = static_cast<int>(i);
    else if (key == "Sampler") f.sampler = v;
    else if (key == "Schedule type") f.schedule_type = v, have_schedule = true;
    else if (key == "CFG scale" && parse_number(v, &d)) f.cfg_scale = d;
    else if (key == "Seed" && parse_number(v, &i)) f.seed = i;
    else if (key == "Size") {
      size_t x = v.find('x');
      int64_t w = 0, h = 0;
      if (x != std::string::npos && parse_number(v.substr(0, x), &w) && parse_number(v.substr(x + 1), &h)) {
        f.width = static_cast<int>(w);
        f.height = static_cast<int>(h);
      } else {
        used = false;
      }
    } else if (key == "Model hash") f.model_hash = v;
    else if (key == "Model") f.model = v;
    else if (key == "VAE hash") f.vae_hash = v;
    else if (key == "VAE") f.vae = v;
    else if (key == "Variation seed" && parse_number(v, &i)) f.variation_seed = i;
    else if (key == "Variation seed strength" && parse_number(v, &d)) f.variation_seed_strength = d;
    else if (key == "Denoising strength" && parse_number(v, &d)) f.denoising_strength = d;
    else if (key == "Clip skip" && parse_number(v, &i)) f.clip_skip = static_cast<int>(i);
    else if (key == "ENSD" && parse_number(v, &i)) f.ensd = i;
    else if (key == "RNG") f.rng = v;
    else if (key == "Version") f.version = v;
    else used = false;
    if (!used) f.extra.emplace_back(key, v);
  }
  if (!have_schedule) {
    for (const char* suffix : kLegacySchedulerSuffixes) {
      std::string s = std::string(" ") + suffix;
      if (f.sampler.size() > s.size() && f.sampler.compare(f.sampler.size() - s.size(), s.size(), s) == 0) {
        f.sampler.resize(f.sampler.size() - s.size());
        f.schedule_type = suffix;
        break;
      }
    }
  }
  return f;
}

}  // namespace diffuse

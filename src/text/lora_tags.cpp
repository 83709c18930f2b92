#include "text/lora_tags.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <optional>
#include <system_error>

#include "core/error.h"

namespace diffuse {
namespace {

// Python's \w on str, for the bytes of UTF-8 text: ASCII letters, digits and
// '_', and any byte of a multi-byte character (letters of other scripts).
bool word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && space(s[b])) ++b;
  while (e > b && space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t p = s.find(sep, start);
    if (p == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, p - start));
    start = p + 1;
  }
}

// A decimal number as Python's float() reads one (surrounding white space
// allowed): digits with an optional point and exponent. nullopt for anything
// else, including "nan" and "inf", which no weight can be.
std::optional<double> parse_number(const std::string& raw) {
  const std::string t = trim(raw);
  if (t.empty()) return std::nullopt;
  size_t i = 0;
  if (t[i] == '+' || t[i] == '-') ++i;
  size_t digits = 0;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i, ++digits;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i, ++exp_digits;
    if (exp_digits == 0) return std::nullopt;
  }
  if (i != t.size()) return std::nullopt;
  // from_chars takes no leading '+'.
  const char* first = t.data() + (t[0] == '+' ? 1 : 0);
  double v = 0;
  const auto r = std::from_chars(first, t.data() + t.size(), v);
  if (r.ec != std::errc() || r.ptr != t.data() + t.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

float weight(const std::string& value, const char* what, const std::string& text) {
  const std::optional<double> v = parse_number(value);
  if (!v || std::abs(*v) > 3.0e38) {
    throw_error(ErrorCode::kInvalidArgument, text + ": the " + what + " weight '" + value +
                                                 "' is not a number (write e.g. <lora:name:0.8>, or "
                                                 "<lora:name:te_weight:unet_weight>)");
  }
  return static_cast<float>(*v);
}

void check_integer(const std::string& value, const std::string& text) {
  const std::string t = trim(value);
  size_t i = t.size() > 0 && (t[0] == '+' || t[0] == '-') ? 1 : 0;
  bool ok = i < t.size();
  for (; i < t.size(); ++i) ok = ok && t[i] >= '0' && t[i] <= '9';
  if (!ok) throw_error(ErrorCode::kInvalidArgument, text + ": dyn '" + value + "' is not a whole number");
}

}  // namespace

std::vector<ExtraNetworkTag> find_extra_network_tags(const std::string& prompt) {
  std::vector<ExtraNetworkTag> tags;
  size_t pos = 0;
  while ((pos = prompt.find('<', pos)) != std::string::npos) {
    // <(\w+):([^>]+)>
    size_t i = pos + 1;
    while (i < prompt.size() && word_byte(static_cast<unsigned char>(prompt[i]))) ++i;
    const size_t word_end = i;
    const size_t close = word_end < prompt.size() && prompt[word_end] == ':' ? prompt.find('>', word_end + 1)
                                                                             : std::string::npos;
    if (word_end == pos + 1 || close == std::string::npos || close == word_end + 1) {
      ++pos;
      continue;
    }
    ExtraNetworkTag t;
    t.begin = pos;
    t.end = close + 1;
    t.text = prompt.substr(pos, t.end - pos);
    t.network = prompt.substr(pos + 1, word_end - pos - 1);
    t.args = split(prompt.substr(word_end + 1, close - word_end - 1), ':');
    tags.push_back(std::move(t));
    pos = close + 1;
  }
  return tags;
}

LoraTag parse_lora_args(const std::vector<std::string>& args, const std::string& text) {
  // A1111's ExtraNetworkParams: "key=value" (exactly one '=') is named, the rest positional.
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> named;
  for (const std::string& item : args) {
    const std::vector<std::string> parts = split(item, '=');
    if (parts.size() == 2) named.emplace_back(trim(parts[0]), parts[1]);
    else positional.push_back(item);
  }
  LoraTag tag;
  tag.text = text;
  if (positional.empty() || trim(positional[0]).empty()) {
    throw_error(ErrorCode::kInvalidArgument, text + ": no LoRA name (write <lora:name:weight>)");
  }
  tag.name = trim(positional[0]);
  // extra_networks_lora.py: te = positional[1] or 1, named te overrides; unet = positional[2] or te,
  // named unet overrides; dyn = positional[3], named dyn overrides.
  tag.te_weight = positional.size() > 1 ? weight(positional[1], "text-encoder", text) : 1.0f;
  std::optional<float> named_te, named_unet;
  for (const auto& [k, v] : named) {
    if (k == "te") named_te = weight(v, "text-encoder", text);
    else if (k == "unet") named_unet = weight(v, "UNet", text);
  }
  if (named_te) tag.te_weight = *named_te;
  tag.unet_weight = positional.size() > 2 ? weight(positional[2], "UNet", text) : tag.te_weight;
  if (named_unet) tag.unet_weight = *named_unet;
  if (positional.size() > 3) {
    check_integer(positional[3], text);
    tag.ignored.push_back("dyn=" + trim(positional[3]));
  }
  for (size_t i = 4; i < positional.size(); ++i) tag.ignored.push_back(positional[i]);
  for (const auto& [k, v] : named) {
    if (k == "te" || k == "unet") continue;
    if (k == "dyn") check_integer(v, text);
    tag.ignored.push_back(k + "=" + v);
  }
  return tag;
}

LoraTag parse_lora_spec(const std::string& spec) {
  std::error_code ec;
  if (spec.find(':') != std::string::npos && std::filesystem::is_regular_file(spec, ec)) {
    LoraTag tag;
    tag.text = spec;
    tag.name = spec;
    return tag;
  }
  return parse_lora_args(split(spec, ':'), "--lora " + spec);
}

PromptNetworks extract_extra_networks(const std::string& prompt) {
  PromptNetworks out;
  size_t copied = 0;
  for (const ExtraNetworkTag& t : find_extra_network_tags(prompt)) {
    out.prompt += prompt.substr(copied, t.begin - copied);
    copied = t.end;
    if (t.network == "lora" || t.network == "lyco") {
      out.loras.push_back(parse_lora_args(t.args, t.text));
    } else {
      out.skipped.push_back(t.text);
    }
  }
  out.prompt += prompt.substr(copied);
  return out;
}

std::string strip_extra_networks(const std::string& prompt) {
  std::string out;
  size_t copied = 0;
  for (const ExtraNetworkTag& t : find_extra_network_tags(prompt)) {
    out += prompt.substr(copied, t.begin - copied);
    copied = t.end;
  }
  return out + prompt.substr(copied);
}

std::string infotext_with_prompt(const std::string& infotext, const std::string& used_prompt,
                                 const std::string& written_prompt) {
  // format_infotext trims the whole text: the prompt loses its leading white space there.
  auto ltrim = [](const std::string& x) {
    size_t b = 0;
    while (b < x.size() && space(x[b])) ++b;
    return x.substr(b);
  };
  const std::string used = ltrim(used_prompt), written = ltrim(written_prompt);
  if (used == written) return infotext;
  if (used.empty()) {
    // The prompt was only tags: the infotext starts with "Negative prompt:" or "Steps:".
    return written + "\n" + infotext;
  }
  if (infotext.compare(0, used.size(), used) != 0) return infotext;
  if (infotext.size() > used.size() && infotext[used.size()] != '\n') return infotext;
  return written + infotext.substr(used.size());
}

std::string format_lora_weight(float w) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), w);
  return std::string(buf, r.ptr);
}

}  // namespace diffuse

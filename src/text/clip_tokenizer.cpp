// Port of transformers' CLIPTokenizer behaviour (tokenizers: normalizer Sequence[NFC,
// Replace(\s+, " "), Lowercase], pre_tokenizer Split(regex, removed, invert) + ByteLevel,
// model BPE(end_of_word_suffix="</w>"), AddedVocabulary special-token splitting) and of the
// vocabulary files openai/CLIP's SimpleTokenizer is built from.
#include "text/clip_tokenizer.h"

#include <array>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/unicode.h"

namespace diffuse {
namespace {

using text::append_utf8;
using text::decode_utf8;
using text::is_letter;
using text::is_number;
using text::is_whitespace;

constexpr const char* kEndOfWord = "</w>";
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCacheEntries = 20000;

// GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so every byte is a visible vocabulary symbol.
std::array<char32_t, 256> bytes_to_unicode() {
  std::array<char32_t, 256> table{};
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int extra = 0;
  for (int b = 0; b < 256; ++b) table[b] = printable(b) ? b : 256 + extra++;
  return table;
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_error(ErrorCode::kIo, "[ClipTokenizer] cannot open " + path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw_error(ErrorCode::kIo, "[ClipTokenizer] cannot read " + path.string());
  return ss.str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string data = read_text_file(path);
  try {
    return nlohmann::json::parse(data);
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kIo, "[ClipTokenizer] corrupt JSON in " + path.string() + ": " + e.what());
  }
}

// Fast path for vocab.json, a flat {"token": id, ...} object of ~49k entries: building a
// generic JSON tree costs most of the load time. Returns false on anything unexpected, and
// the caller falls back to nlohmann::json (which then reports the precise error).
bool parse_flat_vocab(const std::string& s, std::unordered_map<std::string, int>& out) {
  size_t i = 0;
  const size_t n = s.size();
  auto skip_ws = [&] {
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
  };
  auto hex4 = [&](uint32_t& v) {
    if (i + 4 > n) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else return false;
    }
    return true;
  };
  auto parse_string = [&](std::string& str) {
    if (i >= n || s[i] != '"') return false;
    ++i;
    str.clear();
    while (i < n && s[i] != '"') {
      const char c = s[i++];
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        str.push_back(c);
        continue;
      }
      if (i >= n) return false;
      const char e = s[i++];
      switch (e) {
        case '"': str.push_back('"'); break;
        case '\\': str.push_back('\\'); break;
        case '/': str.push_back('/'); break;
        case 'b': str.push_back('\b'); break;
        case 'f': str.push_back('\f'); break;
        case 'n': str.push_back('\n'); break;
        case 'r': str.push_back('\r'); break;
        case 't': str.push_back('\t'); break;
        case 'u': {
          uint32_t cp;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // surrogate pair
            uint32_t lo;
            if (i + 2 > n || s[i] != '\\' || s[i + 1] != 'u') return false;
            i += 2;
            if (!hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return false;
          }
          append_utf8(str, cp);
          break;
        }
        default: return false;
      }
    }
    if (i >= n) return false;
    ++i;  // closing quote
    return true;
  };
  skip_ws();
  if (i >= n || s[i++] != '{') return false;
  std::string key;
  skip_ws();
  if (i < n && s[i] == '}') return false;  // empty: let the slow path report it
  while (true) {
    skip_ws();
    if (!parse_string(key)) return false;
    skip_ws();
    if (i >= n || s[i++] != ':') return false;
    skip_ws();
    int64_t v = 0;
    const size_t digits = i;
    while (i < n && s[i] >= '0' && s[i] <= '9' && v < (int64_t{1} << 40)) v = v * 10 + (s[i++] - '0');
    if (i == digits || v > INT32_MAX) return false;
    out[key] = static_cast<int>(v);  // a repeated key: the last one wins, as in json.load
    skip_ws();
    if (i >= n) return false;
    if (s[i] == ',') {
      ++i;
      continue;
    }
    if (s[i] != '}') return false;
    ++i;
    skip_ws();
    return i == n;
  }
}

// A special token in tokenizer_config.json / special_tokens_map.json is either a string or
// an AddedToken object {"content": ...}.
void read_token(const nlohmann::json& cfg, const char* key, std::string& out,
                const std::filesystem::path& path) {
  if (!cfg.is_object() || !cfg.contains(key) || cfg[key].is_null()) return;
  const auto& v = cfg[key];
  if (v.is_string()) {
    out = v.get<std::string>();
  } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    out = v["content"].get<std::string>();
  } else {
    throw_error(ErrorCode::kIo, "[ClipTokenizer] " + path.string() + ": '" + key +
                                    "' is neither a string nor {\"content\": ...}");
  }
}

std::pair<std::string, std::string> split_merge_line(const std::string& line, const std::string& where) {
  const size_t space = line.find(' ');
  if (space == std::string::npos || space == 0 || space + 1 >= line.size() ||
      line.find(' ', space + 1) != std::string::npos)
    throw_error(ErrorCode::kIo, "[ClipTokenizer] " + where + ": expected 'left right', got '" + line + "'");
  return {line.substr(0, space), line.substr(space + 1)};
}

}  // namespace

struct ClipTokenizer::WordCache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int>> words;
};

ClipTokenizer ClipTokenizer::load(const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(tokenizer_dir);
  const fs::path vocab_path = dir / "vocab.json", merges_path = dir / "merges.txt";
  const fs::path tok_json_path = dir / "tokenizer.json";

  std::unordered_map<std::string, int> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  const bool hub_layout = fs::exists(vocab_path) || !fs::exists(tok_json_path);
  if (hub_layout) {
    vocab.reserve(1 << 16);
    if (!parse_flat_vocab(read_text_file(vocab_path), vocab)) {
      vocab.clear();
      const nlohmann::json v = read_json_file(vocab_path);
      if (!v.is_object() || v.empty())
        throw_error(ErrorCode::kIo, "[ClipTokenizer] " + vocab_path.string() + " is not a token -> id object");
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.value().is_number_integer())
          throw_error(ErrorCode::kIo, "[ClipTokenizer] " + vocab_path.string() + ": id of '" + it.key() +
                                          "' is not an integer");
        vocab[it.key()] = it.value().get<int>();
      }
    }
    std::istringstream lines(read_text_file(merges_path));
    std::string line;
    for (int line_no = 1; std::getline(lines, line); ++line_no) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
      merges.push_back(split_merge_line(line, merges_path.string() + " line " + std::to_string(line_no)));
    }
  } else {
    // transformers >= 5 writes only tokenizer.json: {"model": {"vocab": {...}, "merges": [...]}}
    // with merges as "a b" strings (older) or ["a", "b"] pairs (newer).
    const nlohmann::json t = read_json_file(tok_json_path);
    const std::string where = tok_json_path.string();
    try {
      const auto& model = t.at("model");
      for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it)
        vocab.emplace(it.key(), it.value().get<int>());
      for (const auto& m : model.at("merges")) {
        if (m.is_string()) merges.push_back(split_merge_line(m.get<std::string>(), where));
        else merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
      }
    } catch (const nlohmann::json::exception& e) {
      throw_error(ErrorCode::kIo, "[ClipTokenizer] " + where + ": bad model section: " + e.what());
    }
  }

  std::string bos = "<|startoftext|>", eos = "<|endoftext|>", pad;
  int64_t max_len = 77;
  // special_tokens_map.json is read last: it overrides tokenizer_config.json like transformers.
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path p = dir / name;
    if (!fs::exists(p)) continue;
    const nlohmann::json cfg = read_json_file(p);
    read_token(cfg, "bos_token", bos, p);
    read_token(cfg, "eos_token", eos, p);
    read_token(cfg, "pad_token", pad, p);
    if (cfg.is_object() && cfg.contains("model_max_length")) {
      const auto& m = cfg["model_max_length"];
      if (!m.is_number()) throw_error(ErrorCode::kIo, "[ClipTokenizer] " + p.string() + ": model_max_length is not a number");
      // Some repos store VERY_LARGE_INTEGER (1e30) meaning "unset"; CLIP's context is 77.
      const double v = m.get<double>();
      max_len = (v >= 2 && v <= 1e6) ? static_cast<int64_t>(v) : 77;
    }
  }
  try {
    return ClipTokenizer(std::move(vocab), merges, bos, eos, pad, max_len);
  } catch (const Error& e) {
    throw_error(ErrorCode::kIo, std::string(e.what()) + " (tokenizer folder " + tokenizer_dir + ")");
  }
}

void ClipTokenizer::set_pad_token(const std::string& token) {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) {
    throw_error(ErrorCode::kInvalidArgument, "[ClipTokenizer] pad token '" + token + "' is not in the vocabulary");
  }
  pad_token_ = token;
  pad_id_ = it->second;
  pad_is_split_special_ = pad_token_ != bos_token_ && pad_token_ != eos_token_;
}

ClipTokenizer::ClipTokenizer(std::unordered_map<std::string, int> vocab,
                             const std::vector<std::pair<std::string, std::string>>& merges,
                             const std::string& bos_token, const std::string& eos_token,
                             const std::string& pad_token, int64_t model_max_length)
    : vocab_(std::move(vocab)),
      bos_token_(bos_token),
      eos_token_(eos_token),
      pad_token_(pad_token.empty() ? eos_token : pad_token),
      model_max_length_(model_max_length),
      cache_(std::make_shared<WordCache>()) {
  int max_id = -1;
  for (const auto& [tok, id] : vocab_) {
    if (id < 0) throw_error(ErrorCode::kIo, "[ClipTokenizer] negative id for '" + tok + "'");
    max_id = std::max(max_id, id);
  }
  if (max_id > 10'000'000) throw_error(ErrorCode::kIo, "[ClipTokenizer] implausible vocabulary id " + std::to_string(max_id));
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [tok, id] : vocab_) id_to_token_[id] = tok;

  auto require = [&](const std::string& tok, const char* what) {
    auto it = vocab_.find(tok);
    if (it == vocab_.end()) throw_error(ErrorCode::kIo, std::string("[ClipTokenizer] ") + what + " '" + tok + "' is not in the vocabulary");
    return it->second;
  };
  const auto byte_chars = bytes_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string sym;
    append_utf8(sym, byte_chars[b]);
    byte_ids_[b] = require(sym, "byte symbol");
    byte_eow_ids_[b] = require(sym + kEndOfWord, "byte symbol");
  }
  bos_id_ = require(bos_token_, "bos token");
  eos_id_ = require(eos_token_, "eos token");
  pad_id_ = require(pad_token_, "pad token");
  // A pad token other than the bos/eos strings is a registered special token of its own
  // (SD2 / SDXL tokenizer_2 "!"): it is split out of prompts before normalisation.
  pad_is_split_special_ = pad_token_ != bos_token_ && pad_token_ != eos_token_;

  merges_.reserve(merges.size() * 2);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int l = require(left, "merge symbol"), r = require(right, "merge symbol");
    const int merged = require(left + right, "merge result");
    // The first occurrence of a pair defines its rank (a duplicate line cannot lower it).
    merges_.emplace((static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(r),
                    Merge{static_cast<int>(rank), merged});
  }
}

const std::string& ClipTokenizer::token(int id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || id_to_token_[id].empty())
    throw_error(ErrorCode::kInvalidArgument, "[ClipTokenizer] unknown token id " + std::to_string(id));
  return id_to_token_[id];
}

int ClipTokenizer::token_id(const std::string& tok) const {
  auto it = vocab_.find(tok);
  return it == vocab_.end() ? -1 : it->second;
}

// BPE of one pre-token (tokenizers' BPE::merge_word): symbols in a linked list, a min-heap
// of candidate pairs keyed by (rank, position); stale entries are skipped when popped.
// O(n log n) in the word length, so a 10k-byte run of punctuation stays fast.
void ClipTokenizer::bpe_word(const std::string& word, std::vector<int>& out) const {
  const size_t n = word.size();
  if (n == 0) return;
  const bool cacheable = n <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }

  struct Symbol {
    int id, prev, next;  // prev/next: neighbour index or -1; id -1 once merged away
  };
  std::vector<Symbol> syms(n);
  for (size_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned char>(word[i]);
    syms[i] = {i + 1 == n ? byte_eow_ids_[b] : byte_ids_[b], static_cast<int>(i) - 1,
               i + 1 == n ? -1 : static_cast<int>(i) + 1};
  }
  using Candidate = std::pair<int, int>;  // (rank, left position)
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto find_merge = [&](int left, int right) -> const Merge* {
    auto it = merges_.find((static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  auto push_pair = [&](int pos) {
    if (pos < 0 || syms[pos].next < 0) return;
    if (const Merge* m = find_merge(syms[pos].id, syms[syms[pos].next].id)) heap.emplace(m->rank, pos);
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair(static_cast<int>(i));
  while (!heap.empty()) {
    const auto [rank, pos] = heap.top();
    heap.pop();
    Symbol& s = syms[pos];
    if (s.id < 0 || s.next < 0) continue;
    const Merge* m = find_merge(s.id, syms[s.next].id);
    if (!m || m->rank != rank) continue;  // the pair changed since it was queued
    const int right = s.next;
    s.id = m->merged_id;
    s.next = syms[right].next;
    if (s.next >= 0) syms[s.next].prev = pos;
    syms[right].id = -1;
    push_pair(s.prev);
    push_pair(pos);
  }
  std::vector<int> ids;
  for (int i = 0; i >= 0; i = syms[i].next) ids.push_back(syms[i].id);
  out.insert(out.end(), ids.begin(), ids.end());

  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->words.size() >= kMaxCacheEntries) cache_->words.clear();
    cache_->words.emplace(word, std::move(ids));
  }
}

// Special-token extraction on normalised text, then the pre-tokeniser regex
//   's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// (leftmost alternative wins; whitespace is the only thing no alternative matches),
// then byte-level BPE per match.
void ClipTokenizer::tokenize_normalized(const std::u32string& s, std::vector<int>& out) const {
  static const std::u32string kSpecials[2] = {U"<|startoftext|>", U"<|endoftext|>"};
  const int special_ids[2] = {token_id("<|startoftext|>"), token_id("<|endoftext|>")};
  const size_t n = s.size();
  std::string word;
  auto emit = [&](size_t begin, size_t end) {
    word.clear();
    for (size_t k = begin; k < end; ++k) append_utf8(word, s[k]);
    bpe_word(word, out);
  };
  size_t i = 0;
  while (i < n) {
    const char32_t c = s[i];
    if (c == '<') {
      bool matched = false;
      for (int k = 0; k < 2; ++k) {
        if (special_ids[k] >= 0 && s.compare(i, kSpecials[k].size(), kSpecials[k]) == 0) {
          out.push_back(special_ids[k]);
          i += kSpecials[k].size();
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    if (is_whitespace(c)) {
      ++i;
      continue;
    }
    if (c == '\'' && i + 1 < n) {
      const char32_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') len = 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) len = 3;
      if (len) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    size_t j = i + 1;
    if (is_letter(c)) {
      while (j < n && is_letter(s[j])) ++j;
    } else if (!is_number(c)) {  // a number is always a single-code-point match
      // A special token ends a run: it is extracted before pre-tokenisation.
      while (j < n && !is_whitespace(s[j]) && !is_letter(s[j]) && !is_number(s[j]) &&
             !(s[j] == '<' && (s.compare(j, kSpecials[0].size(), kSpecials[0]) == 0 ||
                               s.compare(j, kSpecials[1].size(), kSpecials[1]) == 0)))
        ++j;
    }
    emit(i, j);
    i = j;
  }
}

std::vector<int> ClipTokenizer::tokenize(const std::string& text) const {
  const std::u32string cps = decode_utf8(text);
  std::vector<int> out;
  out.reserve(text.size() / 3 + 4);

  auto process_segment = [&](size_t begin, size_t end) {
    if (begin >= end) return;
    const std::u32string composed = text::nfc(std::u32string_view(cps).substr(begin, end - begin));
    // Replace(\s+, " ") then Lowercase, in one pass.
    std::u32string norm;
    norm.reserve(composed.size());
    bool in_space = false;
    for (char32_t c : composed) {
      if (is_whitespace(c)) {
        if (!in_space) norm.push_back(' ');
        in_space = true;
      } else {
        in_space = false;
        text::append_lower(norm, c);
      }
    }
    tokenize_normalized(norm, out);
  };

  if (!pad_is_split_special_) {
    process_segment(0, cps.size());
    return out;
  }
  const std::u32string pad = decode_utf8(pad_token_);
  size_t start = 0;
  for (size_t pos = cps.find(pad); pos != std::u32string::npos; pos = cps.find(pad, start)) {
    process_segment(start, pos);
    out.push_back(pad_id_);
    start = pos + pad.size();
  }
  process_segment(start, cps.size());
  return out;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text, int max_length) const {
  if (max_length < 2)
    throw_error(ErrorCode::kInvalidArgument,
                "[ClipTokenizer::encode] max_length must be >= 2 (bos + eos), got " + std::to_string(max_length));
  const std::vector<int> ids = tokenize(text);
  std::vector<int64_t> out;
  out.reserve(max_length);
  out.push_back(bos_id_);
  const size_t keep = std::min(ids.size(), static_cast<size_t>(max_length - 2));
  out.insert(out.end(), ids.begin(), ids.begin() + keep);
  out.push_back(eos_id_);
  out.resize(max_length, pad_id_);
  return out;
}

}  // namespace diffuse

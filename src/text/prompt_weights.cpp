// Port of AUTOMATIC1111 stable-diffusion-webui's prompt emphasis
// (modules/prompt_parser.py parse_prompt_attention, re_attention / re_break) and chunking
// (modules/sd_hijack_clip.py FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line).
// The parser works on code points because Python's regexes do (\s and \b are Unicode).
#include "text/prompt_weights.h"

#include <algorithm>
#include <charconv>

#include "core/error.h"
#include "text/unicode.h"

namespace diffuse {
namespace {

struct Fragment {
  std::u32string text;
  double weight;  // Python float: products are formed in the same order as A1111
};

constexpr double kRoundMultiplier = 1.1;
constexpr double kSquareMultiplier = 1 / 1.1;

// Python str.isspace(): White_Space plus the information separators U+001C..U+001F.
bool is_py_space(char32_t c) { return text::is_whitespace(c) || (c >= 0x1C && c <= 0x1F); }
// Python \w: alphanumeric (categories L*, N*) or underscore.
bool is_py_word(char32_t c) { return c == '_' || text::is_letter(c) || text::is_number(c); }

// re.split(r"\s*\bBREAK\b\s*", text): the text fragment splits around every BREAK that is a
// word of its own, swallowing the whitespace around it; {"BREAK", -1} marks each split.
void append_text(std::vector<Fragment>& res, const std::u32string& s) {
  static const std::u32string kBreak = U"BREAK";
  const size_t n = s.size();
  size_t part_begin = 0;
  size_t i = 0;
  while (i < n) {
    size_t j = i;  // \s* is greedy and backtracking it cannot help: B is not a space
    while (j < n && is_py_space(s[j])) ++j;
    const bool boundary_before = j == 0 || !is_py_word(s[j - 1]);
    const size_t after = j + kBreak.size();
    if (boundary_before && s.compare(j, kBreak.size(), kBreak) == 0 && (after == n || !is_py_word(s[after]))) {
      size_t k = after;
      while (k < n && is_py_space(s[k])) ++k;
      res.push_back({s.substr(part_begin, i - part_begin), 1.0});
      res.push_back({kBreak, kBreakWeight});
      part_begin = i = k;
      continue;
    }
    // A failed attempt inside a whitespace run fails for the whole run: resume after it.
    i = j > i ? j : i + 1;
  }
  res.push_back({s.substr(part_begin), 1.0});
}

// Matches ':\s*([+-]?[.\d]+)\s*\)' at s[i] (s[i] == ':'). Returns the end of the match or 0,
// and the weight text in [num_begin, num_end).
size_t match_weight(const std::u32string& s, size_t i, size_t& num_begin, size_t& num_end) {
  const size_t n = s.size();
  size_t j = i + 1;
  while (j < n && is_py_space(s[j])) ++j;
  num_begin = j;
  if (j < n && (s[j] == '+' || s[j] == '-')) ++j;
  const size_t digits = j;
  // Python's \d also matches non-ASCII decimal digits; prompts use ASCII weights.
  while (j < n && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9'))) ++j;
  if (j == digits) return 0;
  num_end = j;
  while (j < n && is_py_space(s[j])) ++j;
  if (j >= n || s[j] != ')') return 0;
  return j + 1;
}

// Python float() of a [+-]?[.0-9]+ string.
double parse_weight(const std::u32string& s, size_t begin, size_t end) {
  std::string num;
  for (size_t k = begin; k < end; ++k) num.push_back(static_cast<char>(s[k]));
  const std::string original = num;
  size_t skip = (!num.empty() && num[0] == '+') ? 1 : 0;
  double value = 0;
  const auto r = std::from_chars(num.data() + skip, num.data() + num.size(), value);
  if (r.ec != std::errc() || r.ptr != num.data() + num.size())
    throw_error(ErrorCode::kInvalidArgument,
                "[prompt] invalid emphasis weight '" + original + "' (expected a number like 1.2)");
  return value;
}

std::vector<Fragment> parse_attention(const std::string& prompt) {
  const std::u32string s = text::decode_utf8(prompt);
  const size_t n = s.size();
  std::vector<Fragment> res;
  std::vector<size_t> round_brackets, square_brackets;
  auto multiply_range = [&](size_t start, double m) {
    for (size_t p = start; p < res.size(); ++p) res[p].weight *= m;
  };
  auto is_special = [](char32_t c) { return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':'; };

  size_t i = 0;
  while (i < n) {
    const char32_t c = s[i];
    if (c == '\\') {
      const char32_t next = i + 1 < n ? s[i + 1] : 0;
      if (next == '(' || next == ')' || next == '[' || next == ']' || next == '\\') {
        res.push_back({std::u32string(1, next), 1.0});
        i += 2;
      } else {
        res.push_back({std::u32string(), 1.0});  // a lone backslash: text[1:] == ""
        i += 1;
      }
    } else if (c == '(') {
      round_brackets.push_back(res.size());
      ++i;
    } else if (c == '[') {
      square_brackets.push_back(res.size());
      ++i;
    } else if (c == ':') {
      size_t num_begin = 0, num_end = 0;
      const size_t end = match_weight(s, i, num_begin, num_end);
      if (end && !round_brackets.empty()) {
        const double w = parse_weight(s, num_begin, num_end);
        const size_t start = round_brackets.back();
        round_brackets.pop_back();
        multiply_range(start, w);
        i = end;
      } else if (end) {  // ":1.2)" with no open "(" is plain text
        append_text(res, s.substr(i, end - i));
        i = end;
      } else {
        append_text(res, U":");
        ++i;
      }
    } else if (c == ')') {
      if (!round_brackets.empty()) {
        const size_t start = round_brackets.back();
        round_brackets.pop_back();
        multiply_range(start, kRoundMultiplier);
      } else {
        append_text(res, U")");
      }
      ++i;
    } else if (c == ']') {
      if (!square_brackets.empty()) {
        const size_t start = square_brackets.back();
        square_brackets.pop_back();
        multiply_range(start, kSquareMultiplier);
      } else {
        append_text(res, U"]");
      }
      ++i;
    } else {
      size_t j = i;
      while (j < n && !is_special(s[j])) ++j;
      append_text(res, s.substr(i, j - i));
      i = j;
    }
  }
  for (size_t pos : round_brackets) multiply_range(pos, kRoundMultiplier);
  for (size_t pos : square_brackets) multiply_range(pos, kSquareMultiplier);
  if (res.empty()) res.push_back({std::u32string(), 1.0});

  // Merge runs of identical weights (exact comparison, like the Python).
  std::vector<Fragment> merged;
  merged.reserve(res.size());
  for (auto& f : res) {
    if (!merged.empty() && merged.back().weight == f.weight) {
      merged.back().text += f.text;
    } else {
      merged.push_back(std::move(f));
    }
  }
  return merged;
}

}  // namespace

std::vector<std::pair<std::string, float>> parse_prompt_attention(const std::string& prompt) {
  std::vector<std::pair<std::string, float>> out;
  for (const Fragment& f : parse_attention(prompt))
    out.emplace_back(text::encode_utf8(f.text), static_cast<float>(f.weight));
  return out;
}

bool has_weighting_syntax(const std::string& prompt) {
  if (prompt.find_first_of("()[]\\") == std::string::npos && prompt.find("BREAK") == std::string::npos)
    return false;
  try {
    const auto parsed = parse_attention(prompt);
    return !(parsed.size() == 1 && parsed[0].weight == 1.0 && text::encode_utf8(parsed[0].text) == prompt);
  } catch (const Error&) {
    return true;  // a malformed weight is still weighting syntax
  }
}

EmbeddingTriggers::EmbeddingTriggers(std::vector<std::vector<int>> ids, std::function<int(size_t)> vectors)
    : ids_(std::move(ids)), vectors_(std::move(vectors)) {
  for (size_t i = 0; i < ids_.size(); ++i)
    if (!ids_[i].empty()) by_first_id_[ids_[i][0]].push_back(i);
  for (auto& [first, candidates] : by_first_id_) {
    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](size_t a, size_t b) { return ids_[a].size() > ids_[b].size(); });
  }
}

EmbeddingTriggers::Match EmbeddingTriggers::find(const std::vector<int>& tokens, size_t offset) const {
  if (offset >= tokens.size()) return {};
  const auto it = by_first_id_.find(tokens[offset]);
  if (it == by_first_id_.end()) return {};
  for (size_t i : it->second) {
    const std::vector<int>& name = ids_[i];
    if (offset + name.size() <= tokens.size() && std::equal(name.begin(), name.end(), tokens.begin() + offset))
      return {static_cast<int>(i), name.size()};
  }
  return {};
}

PromptChunks encode_weighted(const ClipTokenizer& tokenizer, const std::string& prompt,
                             int comma_padding_backtrack, const EmbeddingTriggers* triggers) {
  const std::vector<Fragment> parsed = parse_attention(prompt);
  const int comma = tokenizer.token_id(",</w>");

  PromptChunks result;
  std::vector<int> chunk_tokens;
  std::vector<float> chunk_weights;
  std::vector<EmbeddingFix> chunk_fixes;  // positions relative to chunk_tokens (bos not counted)
  int last_comma = -1;

  // Closes the current chunk: [bos] + tokens + [eos] + [pad]..., weights 1 outside the tokens.
  auto next_chunk = [&](bool is_last) {
    result.token_count += is_last ? static_cast<int64_t>(chunk_tokens.size()) : kChunkTokens;
    std::vector<int64_t> ids;
    std::vector<float> weights;
    ids.reserve(kChunkTokens + 2);
    weights.reserve(kChunkTokens + 2);
    ids.push_back(tokenizer.bos_id());
    weights.push_back(1.0f);
    ids.insert(ids.end(), chunk_tokens.begin(), chunk_tokens.end());
    weights.insert(weights.end(), chunk_weights.begin(), chunk_weights.end());
    ids.push_back(tokenizer.eos_id());
    weights.push_back(1.0f);
    ids.resize(kChunkTokens + 2, tokenizer.pad_id());
    weights.resize(kChunkTokens + 2, 1.0f);
    for (EmbeddingFix& f : chunk_fixes) f.position += 1;  // after bos
    result.ids.push_back(std::move(ids));
    result.weights.push_back(std::move(weights));
    result.fixes.push_back(std::move(chunk_fixes));
    last_comma = -1;
    chunk_tokens.clear();
    chunk_weights.clear();
    chunk_fixes.clear();
  };

  for (const Fragment& frag : parsed) {
    if (frag.weight == kBreakWeight && frag.text == U"BREAK") {
      next_chunk(false);
      continue;
    }
    const std::vector<int> tokens = tokenizer.tokenize(text::encode_utf8(frag.text));
    const float weight = static_cast<float>(frag.weight);
    size_t position = 0;
    while (position < tokens.size()) {
      const int token = tokens[position];
      const int size = static_cast<int>(chunk_tokens.size());
      if (token == comma) {
        last_comma = size;
      } else if (comma_padding_backtrack != 0 && size == kChunkTokens && last_comma != -1 &&
                 size - last_comma <= comma_padding_backtrack) {
        // Move the words after the last comma into the next chunk. An
        // embedding among them moves with its positions (A1111 leaves its fix
        // behind, pointing at padding: a bug not worth copying).
        const size_t break_at = static_cast<size_t>(last_comma) + 1;
        std::vector<int> moved_tokens(chunk_tokens.begin() + break_at, chunk_tokens.end());
        std::vector<float> moved_weights(chunk_weights.begin() + break_at, chunk_weights.end());
        std::vector<EmbeddingFix> moved_fixes;
        for (auto it = chunk_fixes.begin(); it != chunk_fixes.end();) {
          if (it->position >= static_cast<int>(break_at)) {
            moved_fixes.push_back({it->position - static_cast<int>(break_at), it->embedding, it->vectors});
            it = chunk_fixes.erase(it);
          } else {
            ++it;
          }
        }
        chunk_tokens.resize(break_at);
        chunk_weights.resize(break_at);
        next_chunk(false);
        chunk_tokens = std::move(moved_tokens);
        chunk_weights = std::move(moved_weights);
        chunk_fixes = std::move(moved_fixes);
      }
      if (static_cast<int>(chunk_tokens.size()) == kChunkTokens) next_chunk(false);

      const EmbeddingTriggers::Match match = triggers ? triggers->find(tokens, position) : EmbeddingTriggers::Match{};
      if (match.embedding < 0) {
        chunk_tokens.push_back(token);
        chunk_weights.push_back(weight);
        ++position;
        continue;
      }
      const int vectors = triggers->vectors(static_cast<size_t>(match.embedding));
      if (vectors < 1 || vectors > kChunkTokens)
        throw_error(ErrorCode::kInvalidArgument, "[prompt] a textual-inversion embedding of " +
                                                     std::to_string(vectors) + " vectors does not fit a chunk of " +
                                                     std::to_string(kChunkTokens) + " tokens");
      // It does not fit what is left of this chunk: it starts the next one.
      if (static_cast<int>(chunk_tokens.size()) + vectors > kChunkTokens) next_chunk(false);
      chunk_fixes.push_back({static_cast<int>(chunk_tokens.size()), match.embedding, vectors});
      chunk_tokens.insert(chunk_tokens.end(), static_cast<size_t>(vectors), 0);
      chunk_weights.insert(chunk_weights.end(), static_cast<size_t>(vectors), weight);
      position += match.length;
    }
  }
  if (!chunk_tokens.empty() || result.ids.empty()) next_chunk(true);
  return result;
}

void pad_to_chunk_count(PromptChunks& chunks, const ClipTokenizer& tokenizer, size_t count) {
  if (chunks.ids.size() != chunks.weights.size())
    throw_error(ErrorCode::kInvalidArgument, "[pad_to_chunk_count] ids and weights have different chunk counts");
  if (chunks.ids.size() >= count) return;
  const std::vector<int64_t> empty = tokenizer.encode("", kChunkTokens + 2);
  chunks.ids.resize(count, empty);
  chunks.weights.resize(count, std::vector<float>(kChunkTokens + 2, 1.0f));
  chunks.fixes.resize(count);
}

}  // namespace diffuse

#include "text/unicode.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "text/unicode_tables.h"

namespace diffuse::text {
namespace {

using tables::CodeRange;

bool in_ranges(const CodeRange* ranges, size_t n, char32_t cp) {
  // First range whose last >= cp.
  const CodeRange* end = ranges + n;
  const CodeRange* it =
      std::lower_bound(ranges, end, cp, [](const CodeRange& r, char32_t c) { return r.last < c; });
  return it != end && it->first <= cp;
}

// Hangul syllable composition constants (Unicode ch. 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28;
constexpr int kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

const tables::Decomposition* find_decomposition(char32_t cp) {
  const auto* begin = tables::kCanonicalDecompositions;
  const auto* end = begin + tables::kCanonicalDecompositions_size;
  const auto* it = std::lower_bound(begin, end, cp,
                                    [](const tables::Decomposition& d, char32_t c) { return d.cp < c; });
  return (it != end && it->cp == cp) ? it : nullptr;
}

void decompose_into(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const int s = static_cast<int>(cp - kSBase);
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp < 0xC0) {  // nothing below U+00C0 decomposes
    out.push_back(cp);
    return;
  }
  const tables::Decomposition* d = find_decomposition(cp);
  if (!d) {
    out.push_back(cp);
    return;
  }
  // Canonical decompositions nest at most a few levels deep.
  decompose_into(d->a, out);
  if (d->b != 0) decompose_into(d->b, out);
}

// (first, second) -> primary composite, built once from the decomposition table.
const std::unordered_map<uint64_t, char32_t>& composition_map() {
  static const std::unordered_map<uint64_t, char32_t> map = [] {
    std::unordered_map<uint64_t, char32_t> m;
    for (size_t i = 0; i < tables::kCanonicalDecompositions_size; ++i) {
      const auto& d = tables::kCanonicalDecompositions[i];
      if (d.composes) m.emplace((static_cast<uint64_t>(d.a) << 32) | d.b, d.cp);
    }
    return m;
  }();
  return map;
}

// Returns 0 when (a, b) does not compose.
char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& map = composition_map();
  auto it = map.find((static_cast<uint64_t>(a) << 32) | b);
  return it == map.end() ? 0 : it->second;
}

}  // namespace

std::u32string decode_utf8(std::string_view bytes) {
  std::u32string out;
  out.reserve(bytes.size());
  const size_t n = bytes.size();
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<unsigned char>(bytes[k]); };
  while (i < n) {
    const unsigned char b0 = byte(i);
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    int need;           // continuation bytes
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    char32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 1, cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2, cp = b0 & 0x0F;
      if (b0 == 0xE0) lo = 0xA0;  // no overlongs
      if (b0 == 0xED) hi = 0x9F;  // no surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 3, cp = b0 & 0x07;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
    } else {  // 0x80..0xC1, 0xF5..0xFF never start a sequence
      out.push_back(kReplacementChar);
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      const unsigned char lo_k = k == 0 ? lo : 0x80, hi_k = k == 0 ? hi : 0xBF;
      if (j >= n || byte(j) < lo_k || byte(j) > hi_k) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (byte(j) & 0x3F);
    }
    // On failure the maximal subpart bytes[i, j) becomes one U+FFFD and decoding resumes at j.
    out.push_back(ok ? cp : kReplacementChar);
    i = j;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) append_utf8(out, cp);
  return out;
}

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(tables::kLetterRanges, tables::kLetterRanges_size, cp);
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(tables::kNumberRanges, tables::kNumberRanges_size, cp);
}

bool is_whitespace(char32_t cp) {
  // PropList.txt White_Space (U+200B ZERO WIDTH SPACE is not in it).
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* begin = tables::kCombiningClasses;
  const auto* end = begin + tables::kCombiningClasses_size;
  const auto* it = std::lower_bound(
      begin, end, cp, [](const tables::CombiningRange& r, char32_t c) { return r.last < c; });
  return (it != end && it->first <= cp) ? it->ccc : 0;
}

void append_lower(std::u32string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  if (cp == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: the one multi-code-point mapping
    out.push_back('i');
    out.push_back(0x307);
    return;
  }
  const auto* begin = tables::kLowerRuns;
  const auto* end = begin + tables::kLowerRuns_size;
  const auto* it =
      std::lower_bound(begin, end, cp, [](const tables::LowerRun& r, char32_t c) { return r.last < c; });
  if (it != end && it->first <= cp && (cp - it->first) % it->stride == 0) {
    out.push_back(static_cast<char32_t>(static_cast<int64_t>(cp) + it->delta));
  } else {
    out.push_back(cp);
  }
}

std::u32string nfc(std::u32string_view cps) {
  // Nothing below U+0300 decomposes into, or composes with, anything: ASCII and Latin-1
  // prompts skip the work.
  if (std::all_of(cps.begin(), cps.end(), [](char32_t c) { return c < 0x300; }))
    return std::u32string(cps);

  // 1. Canonical decomposition.
  std::u32string d;
  d.reserve(cps.size() + 8);
  for (char32_t cp : cps) decompose_into(cp, d);

  // 2. Canonical ordering: stable sort of every run of non-starters by combining class
  //    (stable_sort keeps a long run of marks O(n log n)).
  std::vector<uint8_t> ccc(d.size());
  for (size_t i = 0; i < d.size(); ++i) ccc[i] = combining_class(d[i]);
  for (size_t i = 0; i < d.size();) {
    if (ccc[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && ccc[j] != 0) ++j;
    if (j - i > 1) {
      std::vector<std::pair<uint8_t, char32_t>> run;
      run.reserve(j - i);
      for (size_t k = i; k < j; ++k) run.emplace_back(ccc[k], d[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t k = i; k < j; ++k) ccc[k] = run[k - i].first, d[k] = run[k - i].second;
    }
    i = j;
  }

  // 3. Canonical composition (UAX #15): a character combines with the last starter unless
  //    blocked by an intervening character of the same or higher class.
  std::u32string out;
  out.reserve(d.size());
  size_t starter = std::u32string::npos;
  int last_class = -1;  // class of the last character appended (-1: none yet)
  for (size_t i = 0; i < d.size(); ++i) {
    const char32_t c = d[i];
    const int cls = ccc[i];
    if (starter != std::u32string::npos && (last_class < cls || last_class == 0)) {
      // last_class == 0 means the previous character is the starter itself (adjacent).
      if (char32_t composite = compose_pair(out[starter], c)) {
        out[starter] = composite;
        continue;
      }
    }
    if (cls == 0) starter = out.size();
    last_class = cls;
    out.push_back(c);
  }
  return out;
}

}  // namespace diffuse::text

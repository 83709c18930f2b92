// Unicode data comes from utf8proc (the library behind Julia's strings, fuzzed
// in OSS-Fuzz): general categories, combining classes, lowercase mappings,
// canonical decompositions and compositions. What stays here is what it does
// not offer in the form the tokenizer needs: UTF-8 decoding with Python's
// errors='replace' semantics (utf8proc_iterate reports an error, not the
// length of the maximal invalid subpart), the one multi-code-point lowercase
// mapping, and canonical ordering in O(n log n) (see nfc_without_11a7).
#include "text/unicode.h"

#include <algorithm>
#include <vector>

#include <utf8proc.h>

#include "core/error.h"

namespace diffuse::text {
namespace {

bool is_scalar_value(char32_t cp) { return cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF); }

utf8proc_category_t category(char32_t cp) {
  return is_scalar_value(cp) ? utf8proc_category(static_cast<utf8proc_int32_t>(cp)) : UTF8PROC_CATEGORY_CN;
}

// NFC with utf8proc's data: its per-character canonical decomposition and its
// composition, around our own canonical ordering. utf8proc_decompose orders marks with
// a bubble sort, quadratic in the length of a run of marks: 160,000 alternating marks
// (a 320 KB prompt) took 49 s. A stable sort by combining class is the same ordering.
std::u32string nfc_without_11a7(std::u32string_view cps) {
  const auto options = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  std::vector<utf8proc_int32_t> d(cps.size() + 16);
  size_t n = 0;
  for (char32_t c : cps) {
    const auto cp = static_cast<utf8proc_int32_t>(c <= 0x10FFFF ? c : kReplacementChar);
    for (;;) {  // a canonical decomposition is at most 4 code points; grow and retry otherwise
      const utf8proc_ssize_t k = utf8proc_decompose_char(cp, d.data() + n, static_cast<utf8proc_ssize_t>(d.size() - n),
                                                         options, nullptr);
      if (k < 0) throw_error(ErrorCode::kRuntime, std::string("[nfc] utf8proc: ") + utf8proc_errmsg(k));
      if (n + static_cast<size_t>(k) <= d.size()) {
        n += static_cast<size_t>(k);
        break;
      }
      d.resize(d.size() * 2 + static_cast<size_t>(k));
    }
  }
  // Canonical ordering: every run of non-starters, stably by combining class.
  const auto non_starter = [&](size_t k) { return k < n && combining_class(static_cast<char32_t>(d[k])) != 0; };
  for (size_t i = 0; i < n;) {
    if (!non_starter(i)) {
      ++i;
      continue;
    }
    size_t j = i;
    while (non_starter(j)) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](utf8proc_int32_t a, utf8proc_int32_t b) {
      return combining_class(static_cast<char32_t>(a)) < combining_class(static_cast<char32_t>(b));
    });
    i = j;
  }
  const utf8proc_ssize_t m = utf8proc_normalize_utf32(d.data(), static_cast<utf8proc_ssize_t>(n), options);
  if (m < 0) throw_error(ErrorCode::kRuntime, std::string("[nfc] utf8proc: ") + utf8proc_errmsg(m));
  return std::u32string(d.begin(), d.begin() + m);
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
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const utf8proc_category_t c = category(cp);
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool is_whitespace(char32_t cp) {
  // PropList.txt White_Space is, since Unicode 6.3, exactly the separators (Zs, Zl,
  // Zp) plus the controls TAB..CR and NEL. utf8proc has no White_Space property.
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  if (cp == 0x85) return true;
  const utf8proc_category_t c = category(cp);
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

uint8_t combining_class(char32_t cp) {
  if (!is_scalar_value(cp)) return 0;
  return static_cast<uint8_t>(utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class);
}

void append_lower(std::u32string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  // utf8proc_tolower is the simple mapping (UnicodeData.txt); the full one differs
  // only for U+0130 (SpecialCasing.txt's one unconditional lowercase entry).
  if (cp == 0x130) {
    out.push_back('i');
    out.push_back(0x307);
    return;
  }
  out.push_back(is_scalar_value(cp) ? static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))) : cp);
}

std::u32string nfc(std::u32string_view cps) {
  // Nothing below U+0300 decomposes into, or composes with, anything: ASCII and Latin-1
  // prompts skip the work.
  if (std::all_of(cps.begin(), cps.end(), [](char32_t c) { return c < 0x300; }))
    return std::u32string(cps);
  // utf8proc up to its fix in JuliaStrings/utf8proc#317 (November 2025; Debian 12 has
  // 2.8.0) composes an LV syllable with U+11A7, the jamo at TBase that is no trailing
  // consonant, and so drops it. U+11A7 is a
  // starter that composes with nothing on either side, so NFC never crosses it: the
  // pieces between them are normalised on their own.
  constexpr char32_t kJungseongOYae = 0x11A7;
  std::u32string out;
  for (size_t begin = 0;;) {
    const size_t end = std::min(cps.find(kJungseongOYae, begin), cps.size());
    out += nfc_without_11a7(cps.substr(begin, end - begin));
    if (end == cps.size()) return out;
    out.push_back(kJungseongOYae);
    begin = end + 1;
  }
}

}  // namespace diffuse::text

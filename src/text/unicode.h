// The small part of Unicode the CLIP tokenizer needs, matching what Hugging Face
// `tokenizers` does for transformers' CLIPTokenizer (normalizer NFC + `\s+` -> " " +
// Lowercase; pre-tokenizer regex with \p{L}, \p{N}, \s):
//   - UTF-8 decoding with Python's errors='replace' semantics (every maximal invalid
//     subpart becomes one U+FFFD), so arbitrary bytes never crash and always give the
//     same result;
//   - general categories L* and N*, the White_Space property (regex `\s`);
//   - per-code-point lowercasing as Rust's char::to_lowercase (used by tokenizers'
//     Lowercase normalizer; no final-sigma context, U+0130 -> "i\u0307");
//   - NFC (canonical decomposition, canonical ordering, canonical composition, Hangul).
// The Unicode data is utf8proc's (Debian 12: utf8proc 2.8.0, Unicode 15.0).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace diffuse::text {

constexpr char32_t kReplacementChar = 0xFFFD;

// UTF-8 -> code points. Invalid input (bad lead bytes, truncated sequences, overlongs,
// surrogates, > U+10FFFF) is replaced per maximal subpart, exactly like Python's
// bytes.decode('utf-8', errors='replace').
std::u32string decode_utf8(std::string_view bytes);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(std::u32string_view cps);

bool is_letter(char32_t cp);      // general category L* (regex \p{L})
bool is_number(char32_t cp);      // general category N* (regex \p{N})
bool is_whitespace(char32_t cp);  // White_Space property (regex \s in Rust/Oniguruma)
uint8_t combining_class(char32_t cp);

// Appends the full lowercase mapping of `cp` (one code point, except U+0130).
void append_lower(std::u32string& out, char32_t cp);

// Unicode Normalization Form C. Values above U+10FFFF become U+FFFD.
std::u32string nfc(std::u32string_view cps);

}  // namespace diffuse::text

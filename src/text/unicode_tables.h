// Raw Unicode property tables used by text/unicode.cpp (generated data; see
// unicode_tables.cpp for how). Everything is sorted by code point.
#pragma once
#include <cstddef>
#include <cstdint>

namespace diffuse::text::tables {

struct CodeRange {
  char32_t first, last;  // inclusive
};
// Code points first..last map to cp + delta, for every `stride`-th code point from first.
struct LowerRun {
  char32_t first, last;
  int32_t delta;
  int32_t stride;  // 1 (contiguous block) or 2 (alternating upper/lower pairs)
};
struct CombiningRange {
  char32_t first, last;
  uint8_t ccc;  // canonical combining class (non-zero)
};
// Canonical decomposition cp -> a [b]; b == 0 for singletons.
struct Decomposition {
  char32_t cp, a, b;
  uint8_t composes;  // 1: (a, b) recomposes to cp under NFC (primary composite)
};

extern const CodeRange kLetterRanges[];
extern const size_t kLetterRanges_size;
extern const CodeRange kNumberRanges[];
extern const size_t kNumberRanges_size;
extern const LowerRun kLowerRuns[];
extern const size_t kLowerRuns_size;
extern const CombiningRange kCombiningClasses[];
extern const size_t kCombiningClasses_size;
extern const Decomposition kCanonicalDecompositions[];
extern const size_t kCanonicalDecompositions_size;

}  // namespace diffuse::text::tables

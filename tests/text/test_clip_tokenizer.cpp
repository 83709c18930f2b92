// Golden tests: every fixture prompt must give the exact ids of transformers'
// CLIPTokenizer for every tokenizer of every family (shared/fixtures/<family>/tokenizer.json).
#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "text/clip_tokenizer.h"
#include "text/unicode.h"

namespace diffuse {
namespace {

using nlohmann::json;

json load_cases(const std::string& family) {
  return json::parse(testing::read_file(testing::fixtures_dir() + "/" + family + "/tokenizer.json"));
}

std::string tokenizer_dir(const std::string& family, const std::string& name) {
  return testing::fixtures_dir() + "/" + family + "/model/" + name;
}

std::vector<int64_t> to_i64(const json& j) { return j.get<std::vector<int64_t>>(); }

class FamilyTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyTokenizer, InputIdsMatchTransformers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const json fixture = load_cases(GetParam());
  ASSERT_GE(fixture["cases"].size(), 27u);
  for (const auto& [name, info] : fixture["tokenizers"].items()) {
    const ClipTokenizer tok = ClipTokenizer::load(tokenizer_dir(GetParam(), name));
    EXPECT_EQ(tok.bos_id(), info["bos_token_id"].get<int>()) << name;
    EXPECT_EQ(tok.eos_id(), info["eos_token_id"].get<int>()) << name;
    EXPECT_EQ(tok.pad_id(), info["pad_token_id"].get<int>()) << name;
    EXPECT_EQ(tok.pad_token(), info["pad_token"].get<std::string>()) << name;
    EXPECT_EQ(tok.max_length(), info["model_max_length"].get<int64_t>()) << name;
    for (const auto& c : fixture["cases"]) {
      const std::string prompt = c["prompt"].get<std::string>();
      EXPECT_EQ(tok.encode(prompt), to_i64(c[name]["input_ids"])) << GetParam() << "/" << name << ": " << prompt;
    }
  }
}

// 'untruncated_ids' and 'tokens' were produced with the family's first tokenizer.
TEST_P(FamilyTokenizer, UntruncatedIdsAndTokenStrings) {
  DIFFUSE_REQUIRE_FIXTURES();
  const json fixture = load_cases(GetParam());
  const ClipTokenizer tok = ClipTokenizer::load(tokenizer_dir(GetParam(), "tokenizer"));
  for (const auto& c : fixture["cases"]) {
    const std::string prompt = c["prompt"].get<std::string>();
    const std::vector<int> ids = tok.tokenize(prompt);
    std::vector<int64_t> full = {tok.bos_id()};
    full.insert(full.end(), ids.begin(), ids.end());
    full.push_back(tok.eos_id());
    EXPECT_EQ(full, to_i64(c["untruncated_ids"])) << prompt;
    EXPECT_EQ(static_cast<int64_t>(full.size()), c["untruncated_len"].get<int64_t>()) << prompt;
    std::vector<std::string> strings;
    for (int64_t id : full) strings.push_back(tok.token(static_cast<int>(id)));
    EXPECT_EQ(strings, c["tokens"].get<std::vector<std::string>>()) << prompt;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FamilyTokenizer, ::testing::Values("sd1", "sd2", "sdxl"));

TEST(ClipTokenizer, SdxlTokenizersDifferOnlyWhereBangIsSpecial) {
  DIFFUSE_REQUIRE_FIXTURES();
  const ClipTokenizer t1 = ClipTokenizer::load(tokenizer_dir("sdxl", "tokenizer"));
  const ClipTokenizer t2 = ClipTokenizer::load(tokenizer_dir("sdxl", "tokenizer_2"));
  EXPECT_EQ(t1.tokenize("world!"), (std::vector<int>{1002, 256}));
  EXPECT_EQ(t2.tokenize("world!"), (std::vector<int>{1002, 0}));
  EXPECT_EQ(t1.tokenize("a cat"), t2.tokenize("a cat"));
}

// Single-file checkpoints carry no tokenizer config: an SD1-style folder switched to the
// "!" pad must then tokenize exactly like the SD2 tokenizer.
TEST(ClipTokenizer, SetPadTokenMakesBangSpecial) {
  DIFFUSE_REQUIRE_FIXTURES();
  ClipTokenizer tok = ClipTokenizer::load(tokenizer_dir("sd1", "tokenizer"));
  tok.set_pad_token("!");
  EXPECT_EQ(tok.pad_id(), 0);
  const json fixture = load_cases("sd2");
  for (const auto& c : fixture["cases"])
    EXPECT_EQ(tok.encode(c["prompt"].get<std::string>()), to_i64(c["tokenizer"]["input_ids"])) << c["prompt"];
  EXPECT_THROW(tok.set_pad_token("not-a-token"), Error);
}

TEST(ClipTokenizer, EncodeTruncatesAndPads) {
  DIFFUSE_REQUIRE_FIXTURES();
  const ClipTokenizer tok = ClipTokenizer::load(tokenizer_dir("sd2", "tokenizer"));
  std::string prompt;
  for (int i = 0; i < 100; ++i) prompt += "a ";
  const auto ids = tok.encode(prompt);
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(ids.front(), 49406);
  EXPECT_EQ(ids[75], 320);
  EXPECT_EQ(ids.back(), 49407);
  const auto short_ids = tok.encode("a", 5);
  EXPECT_EQ(short_ids, (std::vector<int64_t>{49406, 320, 49407, 0, 0}));
  EXPECT_THROW(tok.encode("a", 1), Error);
}

TEST(ClipTokenizer, NormalisationDetails) {
  DIFFUSE_REQUIRE_FIXTURES();
  const ClipTokenizer tok = ClipTokenizer::load(tokenizer_dir("sd1", "tokenizer"));
  // Decomposed and composed accents give the same ids (NFC); upper case folds (incl. Latin-1).
  EXPECT_EQ(tok.tokenize("cafe\xCC\x81"), tok.tokenize("caf\xC3\xA9"));
  EXPECT_EQ(tok.tokenize("CAF\xC3\x89"), tok.tokenize("caf\xC3\xA9"));
  // Greek/Cyrillic upper case lowercases: "ΑΒΓ" == "αβγ", "ПРИВЕТ" == "привет".
  EXPECT_EQ(tok.tokenize("\xCE\x91\xCE\x92\xCE\x93"), tok.tokenize("\xCE\xB1\xCE\xB2\xCE\xB3"));
  EXPECT_EQ(tok.tokenize("\xD0\x9F\xD0\xA0\xD0\x98"), tok.tokenize("\xD0\xBF\xD1\x80\xD0\xB8"));
  // Full-width upper case lowercases to full-width lower case (no NFKC folding).
  EXPECT_EQ(tok.tokenize("\xEF\xBC\xA1"), tok.tokenize("\xEF\xBD\x81"));
  EXPECT_NE(tok.tokenize("\xEF\xBD\x81"), tok.tokenize("a"));
  // Special tokens are matched after lowercasing (they are "normalized" added tokens).
  EXPECT_EQ(tok.tokenize("x<|endoftext|>y"), (std::vector<int>{tok.token_id("x</w>"), 49407, tok.token_id("y</w>")}));
  EXPECT_EQ(tok.tokenize("?<|startoftext|>"), (std::vector<int>{tok.token_id("?</w>"), 49406}));
  // NBSP and ideographic space are whitespace; contractions split.
  EXPECT_EQ(tok.tokenize("a\xC2\xA0" "b\xE3\x80\x80" "c"), tok.tokenize("a b c"));
  EXPECT_EQ(tok.tokenize("it's"), (std::vector<int>{tok.token_id("it</w>"), tok.token_id("'s</w>")}));
}

TEST(ClipTokenizer, InvalidUtf8IsReplacedDeterministically) {
  DIFFUSE_REQUIRE_FIXTURES();
  const ClipTokenizer tok = ClipTokenizer::load(tokenizer_dir("sd1", "tokenizer"));
  // Each maximal invalid subpart is one U+FFFD (Python errors='replace').
  EXPECT_EQ(tok.tokenize("a\xFF" "b"), tok.tokenize("a\xEF\xBF\xBD" "b"));
  EXPECT_EQ(tok.tokenize("\xE2\x82"), tok.tokenize("\xEF\xBF\xBD"));
  EXPECT_EQ(tok.tokenize("\xED\xA0\x80"), tok.tokenize("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
  const std::string garbage("\x00\x80\xC0\xC1\xF5\xFF\xF4\x90\x80\x80\xE0\x80\x80", 13);
  EXPECT_EQ(tok.tokenize(garbage), tok.tokenize(garbage));
  EXPECT_FALSE(tok.tokenize(garbage).empty());
}

TEST(ClipTokenizer, LongPromptsAreFast) {
  DIFFUSE_REQUIRE_FIXTURES();
  const ClipTokenizer tok = ClipTokenizer::load(tokenizer_dir("sd1", "tokenizer"));
  const std::vector<std::string> prompts = {
      std::string(10000, 'a'), std::string(10000, '!'), std::string(10000, ' '),
      [] { std::string s; for (int i = 0; i < 2500; ++i) s += "\xF0\x9F\x90\xB1"; return s; }(),
      [] { std::string s = "e"; for (int i = 0; i < 5000; ++i) s += "\xCC\x81"; return s; }(),
      [] { std::string s; for (int i = 0; i < 1000; ++i) s += "photo of a cat, "; return s; }()};
  for (const auto& p : prompts) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.tokenize(p);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 0.5) << "prompt of " << p.size() << " bytes took " << s << " s";
    if (p[0] != ' ') {
      EXPECT_FALSE(ids.empty());
    }
  }
}

TEST(ClipTokenizer, MissingOrCorruptFilesNameTheFile) {
  const std::string dir = testing::temp_dir();
  try {
    ClipTokenizer::load(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("vocab.json"), std::string::npos) << e.what();
  }
  std::ofstream(dir + "/vocab.json") << "{not json";
  try {
    ClipTokenizer::load(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("vocab.json"), std::string::npos) << e.what();
  }
  std::ofstream(dir + "/vocab.json", std::ios::trunc) << "{\"a\": 0}";
  try {
    ClipTokenizer::load(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("merges.txt"), std::string::npos) << e.what();
  }
}

TEST(Unicode, NfcAndDecoding) {
  using text::decode_utf8;
  using text::nfc;
  // e + combining acute -> é; A + ring + acute keeps order -> Ǻ (U+01FA); Hangul jamo compose.
  EXPECT_EQ(nfc(U"e\u0301"), U"\u00E9");
  EXPECT_EQ(nfc(U"A\u030A\u0301"), U"\u01FA");
  EXPECT_EQ(nfc(U"\u1100\u1161\u11A8"), U"\uAC01");
  // Canonical reordering: dot below (220) sorts before acute (230), then both compose onto q? no:
  // q has no precomposed forms, so the marks stay, reordered.
  EXPECT_EQ(nfc(U"q\u0301\u0323"), U"q\u0323\u0301");
  // Composition exclusion: U+0958 decomposes and does not recompose.
  EXPECT_EQ(nfc(U"\u0958"), U"\u0915\u093C");
  // Singleton: Angstrom sign -> Å.
  EXPECT_EQ(nfc(U"\u212B"), U"\u00C5");
  // U+11A7 (the jamo at Hangul TBase) is no trailing consonant: it stays after an LV
  // syllable (utf8proc 2.8 drops it; unicode.cpp works around that).
  EXPECT_EQ(nfc(U"\uB920\u11A7y\u0301"), U"\uB920\u11A7\u00FD");
  EXPECT_EQ(nfc(U"\u1105\u1170\u11A7\u11B3"), U"\uB920\u11A7\u11B3");
  // Long runs of marks of alternating classes are ordered in O(n log n).
  std::u32string marks = U"e";
  for (int i = 0; i < 50000; ++i) marks += U"\u0301\u0323";
  const auto t0 = std::chrono::steady_clock::now();
  const std::u32string ordered = nfc(marks);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
  ASSERT_EQ(ordered.size(), marks.size() - 1);
  EXPECT_EQ(ordered.substr(0, 2), U"\u1EB9\u0323");  // e + dot below composes; the other 49,999 follow
  EXPECT_EQ(ordered.back(), U'\u0301');
  EXPECT_EQ(decode_utf8("\xF0\x9F\x90\xB1"), U"\U0001F431");
  EXPECT_EQ(decode_utf8("\xE0\x80"), std::u32string(2, text::kReplacementChar));
  EXPECT_EQ(decode_utf8("\xF0\x9F\x90"), std::u32string(1, text::kReplacementChar));
}

TEST(Unicode, CategoriesWhitespaceAndLowercase) {
  using namespace text;
  EXPECT_TRUE(is_letter(U'\u00E9'));
  EXPECT_TRUE(is_letter(U'\u4E2D'));
  EXPECT_TRUE(is_letter(U'\u02B0'));   // Lm
  EXPECT_FALSE(is_letter(U'\u0301'));  // Mn
  EXPECT_TRUE(is_number(U'\u0661'));   // Nd
  EXPECT_TRUE(is_number(U'\u00BD'));   // No
  EXPECT_TRUE(is_number(U'\u2163'));   // Nl
  EXPECT_FALSE(is_number(U'\u00B7'));
  for (char32_t ws : {0x09, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000})
    EXPECT_TRUE(is_whitespace(ws)) << std::hex << static_cast<uint32_t>(ws);
  for (char32_t not_ws : {0x08, 0x1C, 0x180E, 0x200B, 0xFEFF, 0x110000})
    EXPECT_FALSE(is_whitespace(not_ws)) << std::hex << static_cast<uint32_t>(not_ws);
  std::u32string lower;
  for (char32_t c : {U'\u0130', U'\u0391', U'\u01C5', U'\u1E9E', U'\u03A3', U'\uFF21', U'\U00010400'}) append_lower(lower, c);
  EXPECT_EQ(lower, U"i\u0307\u03B1\u01C6\u00DF\u03C3\uFF41\U00010428");
  EXPECT_EQ(combining_class(U'\u0301'), 230);
  EXPECT_EQ(combining_class(U'\u0323'), 220);
  EXPECT_EQ(combining_class(U'a'), 0);
}

}  // namespace
}  // namespace diffuse

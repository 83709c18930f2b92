// AUTOMATIC1111 emphasis parsing (modules/prompt_parser.py docstring examples and more)
// and 75-token chunking (modules/sd_hijack_clip.py tokenize_line).
#include <atomic>
#include <cmath>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "text/prompt_weights.h"

namespace diffuse {
namespace {

using Parsed = std::vector<std::pair<std::string, float>>;

void expect_parsed(const std::string& prompt, const std::vector<std::pair<std::string, double>>& expected) {
  const Parsed got = parse_prompt_attention(prompt);
  ASSERT_EQ(got.size(), expected.size()) << prompt;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, expected[i].first) << prompt << " fragment " << i;
    // The Python weights are doubles; ours are the same doubles rounded to float.
    EXPECT_EQ(got[i].second, static_cast<float>(expected[i].second)) << prompt << " fragment " << i;
  }
}

TEST(ParsePromptAttention, A1111DocstringExamples) {
  expect_parsed("normal text", {{"normal text", 1.0}});
  expect_parsed("an (important) word", {{"an ", 1.0}, {"important", 1.1}, {" word", 1.0}});
  expect_parsed("(unbalanced", {{"unbalanced", 1.1}});
  expect_parsed("\\(literal\\]", {{"(literal]", 1.0}});
  expect_parsed("(unnecessary)(parens)", {{"unnecessaryparens", 1.1}});
  expect_parsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
                {{"a ", 1.0},
                 {"house", 1.5730000000000004},
                 {" ", 1.1},
                 {"on", 1.0},
                 {" a ", 1.1},
                 {"hill", 0.55},
                 {", sun, ", 1.1},
                 {"sky", 1.4641000000000006},
                 {".", 1.1}});
}

TEST(ParsePromptAttention, WeightsNestingAndEscapes) {
  expect_parsed("a (very beautiful) girl", {{"a ", 1.0}, {"very beautiful", 1.1}, {" girl", 1.0}});
  expect_parsed("(a:1.5) (b:0.5)", {{"a", 1.5}, {" ", 1.0}, {"b", 0.5}});
  expect_parsed("((a))", {{"a", 1.1 * 1.1}});
  expect_parsed("[a]", {{"a", 1 / 1.1}});
  expect_parsed("[[a]", {{"a", (1 / 1.1) * (1 / 1.1)}});
  expect_parsed("((a:1.2) b)", {{"a", 1.2 * 1.1}, {" b", 1.1}});
  expect_parsed("(a: 1.3 )", {{"a", 1.3}});
  expect_parsed("(a:-0.5)", {{"a", -0.5}});
  expect_parsed("(a:+.5)", {{"a", 0.5}});
  expect_parsed("a \\\\ b \\) c", {{"a \\ b ) c", 1.0}});
  expect_parsed("a) b]", {{"a) b]", 1.0}});          // unmatched closers are text
  expect_parsed("time: 10:30 x:1.5)", {{"time: 10:30 x:1.5)", 1.0}});  // no open "(": text
  expect_parsed("", {{"", 1.0}});
  expect_parsed("()", {{"", 1.0}});
  EXPECT_THROW(parse_prompt_attention("(a:1.2.3)"), Error);
  EXPECT_THROW(parse_prompt_attention("(a:.)"), Error);
}

TEST(ParsePromptAttention, Break) {
  expect_parsed("a BREAK b", {{"a", 1.0}, {"BREAK", -1.0}, {"b", 1.0}});
  expect_parsed("BREAK", {{"", 1.0}, {"BREAK", -1.0}, {"", 1.0}});
  expect_parsed("aBREAK b", {{"aBREAK b", 1.0}});
  expect_parsed("a BREAKfast", {{"a BREAKfast", 1.0}});
  expect_parsed("a break b", {{"a break b", 1.0}});
  expect_parsed("a,BREAK\n b", {{"a,", 1.0}, {"BREAK", -1.0}, {"b", 1.0}});
  expect_parsed("(a) BREAK (b)", {{"a", 1.1}, {"", 1.0}, {"BREAK", -1.0}, {"", 1.0}, {"b", 1.1}});
}

TEST(ParsePromptAttention, InvalidUtf8AndLongInputsDoNotCrash) {
  const std::string garbage("\xFF(\xC3(a:1.1)\\\xE2\x82[", 13);
  EXPECT_EQ(parse_prompt_attention(garbage), parse_prompt_attention(garbage));
  std::string deep(5000, '(');
  deep += "x";
  deep += std::string(5000, ')');
  const Parsed p = parse_prompt_attention(deep);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].first, "x");
  EXPECT_TRUE(std::isinf(p[0].second));  // 1.1^5000 overflows, as in Python
}

TEST(HasWeightingSyntax, DetectsSyntax) {
  EXPECT_FALSE(has_weighting_syntax("a photo of a cat, 4k"));
  EXPECT_FALSE(has_weighting_syntax("time: 10:30"));
  EXPECT_TRUE(has_weighting_syntax("a (cat)"));
  EXPECT_TRUE(has_weighting_syntax("a [cat]"));
  EXPECT_TRUE(has_weighting_syntax("a \\(cat\\)"));
  EXPECT_TRUE(has_weighting_syntax("a BREAK b"));
  EXPECT_TRUE(has_weighting_syntax("(a:1.2.3)"));
  EXPECT_FALSE(has_weighting_syntax("BREAKfast"));
}

class EncodeWeighted : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    sd1_ = std::make_unique<ClipTokenizer>(ClipTokenizer::load(testing::fixtures_dir() + "/sd1/model/tokenizer"));
    sd2_ = std::make_unique<ClipTokenizer>(ClipTokenizer::load(testing::fixtures_dir() + "/sd2/model/tokenizer"));
  }
  static std::vector<int64_t> layout(const ClipTokenizer& tok, const std::vector<int>& tokens) {
    std::vector<int64_t> ids = {tok.bos_id()};
    ids.insert(ids.end(), tokens.begin(), tokens.end());
    ids.push_back(tok.eos_id());
    ids.resize(77, tok.pad_id());
    return ids;
  }
  std::unique_ptr<ClipTokenizer> sd1_, sd2_;
};

TEST_F(EncodeWeighted, PlainPromptsEqualEncode) {
  int checked = 0;
  for (const char* family : {"sd1", "sd2", "sdxl"}) {
    const auto fixture = nlohmann::json::parse(testing::read_file(testing::fixtures_dir() + "/" + family + "/tokenizer.json"));
    for (const auto& [name, info] : fixture["tokenizers"].items()) {
      const ClipTokenizer tok = ClipTokenizer::load(testing::fixtures_dir() + "/" + family + "/model/" + name);
      for (const auto& c : fixture["cases"]) {
        const std::string prompt = c["prompt"].get<std::string>();
        if (has_weighting_syntax(prompt) || tok.tokenize(prompt).size() > 75) continue;
        const PromptChunks chunks = encode_weighted(tok, prompt);
        ASSERT_EQ(chunks.ids.size(), 1u) << prompt;
        EXPECT_EQ(chunks.ids[0], c[name]["input_ids"].get<std::vector<int64_t>>()) << family << "/" << name << ": " << prompt;
        EXPECT_EQ(chunks.weights[0], std::vector<float>(77, 1.0f)) << prompt;
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 4 * 22);  // 4 tokenizers, all but the few weighted / over-long prompts
}

TEST_F(EncodeWeighted, WeightsFollowTokens) {
  const PromptChunks c = encode_weighted(*sd2_, "a (cat:1.5) [dog]");
  ASSERT_EQ(c.ids.size(), 1u);
  EXPECT_EQ(c.ids[0], layout(*sd2_, {320, sd2_->token_id("cat</w>"), sd2_->token_id("dog</w>")}));
  std::vector<float> w(77, 1.0f);
  w[2] = 1.5f;
  w[3] = static_cast<float>(1 / 1.1);
  EXPECT_EQ(c.weights[0], w);
  EXPECT_EQ(c.token_count, 3);
}

TEST_F(EncodeWeighted, EmptyPromptIsOneChunk) {
  const PromptChunks c = encode_weighted(*sd1_, "");
  ASSERT_EQ(c.ids.size(), 1u);
  EXPECT_EQ(c.ids[0], sd1_->encode(""));
  EXPECT_EQ(c.token_count, 0);
}

TEST_F(EncodeWeighted, BreakStartsANewChunk) {
  const PromptChunks c = encode_weighted(*sd2_, "a cat BREAK a dog");
  ASSERT_EQ(c.ids.size(), 2u);
  EXPECT_EQ(c.ids[0], sd2_->encode("a cat"));
  EXPECT_EQ(c.ids[1], sd2_->encode("a dog"));
  EXPECT_EQ(c.token_count, 75 + 2);
}

TEST_F(EncodeWeighted, FixtureLongPromptMakesTwoChunks) {
  const auto fixture = nlohmann::json::parse(testing::read_file(testing::fixtures_dir() + "/sd1/tokenizer.json"));
  std::string prompt;
  for (const auto& c : fixture["cases"])
    if (c["untruncated_len"].get<int>() == 92) prompt = c["prompt"].get<std::string>();
  ASSERT_FALSE(prompt.empty());
  const std::vector<int> tokens = sd1_->tokenize(prompt);
  ASSERT_EQ(tokens.size(), 90u);
  // Token 75 of this prompt is a comma: a comma arriving when the chunk is full does not
  // backtrack, it opens the next chunk (A1111 records it as last_comma and then closes).
  ASSERT_EQ(tokens[75], sd1_->token_id(",</w>"));
  for (int backtrack : {20, 0}) {
    const PromptChunks c = encode_weighted(*sd1_, prompt, backtrack);
    ASSERT_EQ(c.ids.size(), 2u);
    EXPECT_EQ(c.ids[0], layout(*sd1_, {tokens.begin(), tokens.begin() + 75}));
    EXPECT_EQ(c.ids[1], layout(*sd1_, {tokens.begin() + 75, tokens.end()}));
    EXPECT_EQ(c.token_count, 90);
    for (const auto& w : c.weights) EXPECT_EQ(w, std::vector<float>(77, 1.0f));
  }
  // The first chunk is what diffusers sees for the truncated prompt.
  EXPECT_EQ(encode_weighted(*sd1_, prompt).ids[0], sd1_->encode(prompt));
}

TEST_F(EncodeWeighted, OverflowMovesWordsAfterLastCommaToNextChunk) {
  std::string prompt;
  for (int i = 0; i < 70; ++i) prompt += "a ";
  prompt += ", ";
  for (int i = 0; i < 10; ++i) prompt += "(b) ";
  const int a = sd1_->token_id("a</w>"), b = sd1_->token_id("b</w>"), comma = sd1_->token_id(",</w>");
  std::vector<int> first(70, a);
  first.push_back(comma);
  const PromptChunks c = encode_weighted(*sd1_, prompt);
  ASSERT_EQ(c.ids.size(), 2u);
  EXPECT_EQ(c.ids[0], layout(*sd1_, first));
  EXPECT_EQ(c.ids[1], layout(*sd1_, std::vector<int>(10, b)));
  // The moved tokens keep their weights; the rest of chunk 0 is 1.0.
  std::vector<float> w1(77, 1.0f);
  for (int i = 1; i <= 10; ++i) w1[i] = 1.1f;
  EXPECT_EQ(c.weights[0], std::vector<float>(77, 1.0f));
  EXPECT_EQ(c.weights[1], w1);
  EXPECT_EQ(c.token_count, 75 + 10);
  // With backtracking off the cut is at exactly 75 tokens.
  const PromptChunks plain = encode_weighted(*sd1_, prompt, 0);
  ASSERT_EQ(plain.ids.size(), 2u);
  first.insert(first.end(), 4, b);
  EXPECT_EQ(plain.ids[0], layout(*sd1_, first));
  EXPECT_EQ(plain.ids[1], layout(*sd1_, std::vector<int>(6, b)));
  // A comma more than 20 tokens back is not used.
  std::string far;
  for (int i = 0; i < 50; ++i) far += "a ";
  far += ", ";
  for (int i = 0; i < 30; ++i) far += "b ";
  const std::vector<int> far_tokens = sd1_->tokenize(far);
  const PromptChunks fc = encode_weighted(*sd1_, far);
  ASSERT_EQ(fc.ids.size(), 2u);
  EXPECT_EQ(fc.ids[0], layout(*sd1_, {far_tokens.begin(), far_tokens.begin() + 75}));
}

TEST_F(EncodeWeighted, ExactlyFullChunksAndOverflow) {
  std::string p75, p76;
  for (int i = 0; i < 75; ++i) p75 += "a ";
  p76 = p75 + "b";
  const PromptChunks c75 = encode_weighted(*sd2_, p75);
  ASSERT_EQ(c75.ids.size(), 1u);
  EXPECT_EQ(c75.ids[0], sd2_->encode(p75));
  const PromptChunks c76 = encode_weighted(*sd2_, p76);
  ASSERT_EQ(c76.ids.size(), 2u);
  EXPECT_EQ(c76.ids[0], sd2_->encode(p75));
  EXPECT_EQ(c76.ids[1], sd2_->encode("b"));
  EXPECT_EQ(c76.token_count, 76);
  // A comma that arrives when the chunk is full starts the next chunk (A1111 behaviour).
  const PromptChunks comma = encode_weighted(*sd2_, p75 + ", b");
  ASSERT_EQ(comma.ids.size(), 2u);
  EXPECT_EQ(comma.ids[1], sd2_->encode(", b"));
}

TEST_F(EncodeWeighted, FragmentsAreTokenisedSeparately) {
  // A1111 tokenises each weighted fragment on its own, so "(sky)scraper" is "sky" + "scraper".
  const PromptChunks c = encode_weighted(*sd1_, "(sky)scraper");
  std::vector<int> expected = sd1_->tokenize("sky");
  const std::vector<int> rest = sd1_->tokenize("scraper");
  expected.insert(expected.end(), rest.begin(), rest.end());
  EXPECT_EQ(c.ids[0], layout(*sd1_, expected));
  EXPECT_NE(c.ids[0], sd1_->encode("skyscraper"));
}

TEST_F(EncodeWeighted, PadToChunkCountAppendsEmptyChunks) {
  PromptChunks c = encode_weighted(*sd2_, "(a cat)");
  pad_to_chunk_count(c, *sd2_, 3);
  ASSERT_EQ(c.ids.size(), 3u);
  ASSERT_EQ(c.weights.size(), 3u);
  EXPECT_EQ(c.ids[1], sd2_->encode(""));
  EXPECT_EQ(c.ids[2], sd2_->encode(""));
  EXPECT_EQ(c.weights[2], std::vector<float>(77, 1.0f));
  EXPECT_EQ(c.weights[0][1], 1.1f);
  pad_to_chunk_count(c, *sd2_, 1);  // never shrinks
  EXPECT_EQ(c.ids.size(), 3u);
}

TEST_F(EncodeWeighted, ConcurrentUseGivesSameResults) {
  std::vector<std::string> prompts;
  for (int i = 0; i < 64; ++i)
    prompts.push_back("prompt " + std::to_string(i) + ", (word" + std::to_string(i * 7919) + ":1.2) BREAK zebra!" +
                      std::string(i, 'x'));
  std::vector<PromptChunks> expected;
  for (const auto& p : prompts) expected.push_back(encode_weighted(*sd2_, p));
  const ClipTokenizer fresh = ClipTokenizer::load(testing::fixtures_dir() + "/sd2/model/tokenizer");  // empty cache
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < prompts.size(); ++i) {
        const size_t k = (i * 13 + t * 7) % prompts.size();
        const PromptChunks c = encode_weighted(fresh, prompts[k]);
        if (c.ids != expected[k].ids || c.weights != expected[k].weights) ++mismatches;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace diffuse

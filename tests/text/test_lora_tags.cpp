// A1111's extra-network tags (<lora:name:w>, <lyco:...>, <hypernet:...>) as
// text/lora_tags.h reads them: weights in A1111's order (text encoder, then
// UNet), named arguments, what is stripped from the prompt, and the errors.
#include "text/lora_tags.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "test_util.h"

namespace diffuse {
namespace {

// The message of the kInvalidArgument `f` throws ("" when it does not throw).
template <class F>
std::string invalid_argument(F f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    return e.what();
  }
  return "";
}

TEST(LoraTags, OneWeightSetsBoth) {
  const PromptNetworks n = extract_extra_networks("a red fox <lora:fox_style:0.8> in the snow");
  ASSERT_EQ(n.loras.size(), 1u);
  EXPECT_EQ(n.loras[0].name, "fox_style");
  EXPECT_FLOAT_EQ(n.loras[0].te_weight, 0.8f);
  EXPECT_FLOAT_EQ(n.loras[0].unet_weight, 0.8f);
  EXPECT_EQ(n.loras[0].text, "<lora:fox_style:0.8>");
  EXPECT_TRUE(n.loras[0].ignored.empty());
  // Replaced by nothing, as A1111's re.sub: the spaces around it stay.
  EXPECT_EQ(n.prompt, "a red fox  in the snow");
  EXPECT_TRUE(n.skipped.empty());
}

TEST(LoraTags, NoWeightIsOne) {
  const PromptNetworks n = extract_extra_networks("<lora:detail>");
  ASSERT_EQ(n.loras.size(), 1u);
  EXPECT_EQ(n.loras[0].name, "detail");
  EXPECT_EQ(n.loras[0].te_weight, 1.0f);
  EXPECT_EQ(n.loras[0].unet_weight, 1.0f);
  EXPECT_EQ(n.prompt, "");
}

// extra_networks_lora.py: positional[1] is the text encoders' weight, positional[2] the UNet's.
TEST(LoraTags, TwoWeightsAreTextEncoderThenUnet) {
  const PromptNetworks n = extract_extra_networks("x <lora:detail:0.5:0.25>");
  ASSERT_EQ(n.loras.size(), 1u);
  EXPECT_FLOAT_EQ(n.loras[0].te_weight, 0.5f);
  EXPECT_FLOAT_EQ(n.loras[0].unet_weight, 0.25f);
}

TEST(LoraTags, NamedArgumentsOverride) {
  LoraTag t = extract_extra_networks("<lora:a:1:unet=0.3>").loras.at(0);
  EXPECT_FLOAT_EQ(t.te_weight, 1.0f);
  EXPECT_FLOAT_EQ(t.unet_weight, 0.3f);
  // te= also sets the UNet's default, as A1111 reads te first.
  t = extract_extra_networks("<lora:a:te=0.2>").loras.at(0);
  EXPECT_FLOAT_EQ(t.te_weight, 0.2f);
  EXPECT_FLOAT_EQ(t.unet_weight, 0.2f);
  t = extract_extra_networks("<lora:a:0.9:0.8:te=0:unet=0.1>").loras.at(0);
  EXPECT_FLOAT_EQ(t.te_weight, 0.0f);
  EXPECT_FLOAT_EQ(t.unet_weight, 0.1f);
}

TEST(LoraTags, DynAndUnknownArgumentsAreKeptButNotApplied) {
  LoraTag t = extract_extra_networks("<lora:a:0.7:0.6:4>").loras.at(0);
  EXPECT_FLOAT_EQ(t.te_weight, 0.7f);
  EXPECT_FLOAT_EQ(t.unet_weight, 0.6f);
  EXPECT_EQ(t.ignored, std::vector<std::string>({"dyn=4"}));
  t = extract_extra_networks("<lora:a:1:lbw=1,0,0,1>").loras.at(0);
  EXPECT_EQ(t.ignored, std::vector<std::string>({"lbw=1,0,0,1"}));
  EXPECT_NE(invalid_argument([] { extract_extra_networks("<lora:a:1:1:x>"); }).find("dyn"), std::string::npos);
}

TEST(LoraTags, LycoIsALora) {
  const PromptNetworks n = extract_extra_networks("<lyco:loha_style:0.6>, a castle");
  ASSERT_EQ(n.loras.size(), 1u);
  EXPECT_EQ(n.loras[0].name, "loha_style");
  EXPECT_FLOAT_EQ(n.loras[0].unet_weight, 0.6f);
  EXPECT_EQ(n.prompt, ", a castle");
}

TEST(LoraTags, OtherNetworksAreRemovedAndReported) {
  const PromptNetworks n = extract_extra_networks("a <hypernet:anime:1> cat <foo:bar> <lora:x:1>");
  EXPECT_EQ(n.prompt, "a  cat  ");
  EXPECT_EQ(n.skipped, std::vector<std::string>({"<hypernet:anime:1>", "<foo:bar>"}));
  ASSERT_EQ(n.loras.size(), 1u);
}

TEST(LoraTags, SeveralTagsInOrder) {
  const PromptNetworks n = extract_extra_networks("<lora:a:1>a cat, <lora:b:0.5>, <lyco:c:-1> BREAK dog <lora:a:0.1>");
  ASSERT_EQ(n.loras.size(), 4u);
  EXPECT_EQ(n.loras[0].name, "a");
  EXPECT_EQ(n.loras[1].name, "b");
  EXPECT_EQ(n.loras[2].name, "c");
  EXPECT_FLOAT_EQ(n.loras[2].te_weight, -1.0f);  // negative weights are numbers too
  EXPECT_EQ(n.loras[3].name, "a");                // a name used twice is applied twice, as in A1111
  EXPECT_EQ(n.prompt, "a cat, ,  BREAK dog ");
}

TEST(LoraTags, WhatIsNotATag) {
  for (const std::string p : {"a <b> c", "<lora:>", "a < lora:x>", "<:x:1>", "a <lora:x:1", "(word:1.2) [a:b:0.5]",
                              "a > b < c"}) {
    const PromptNetworks n = extract_extra_networks(p);
    EXPECT_EQ(n.prompt, p) << p;
    EXPECT_TRUE(n.loras.empty()) << p;
    EXPECT_TRUE(n.skipped.empty()) << p;
  }
}

// A1111's regex takes everything up to the first '>' (a '<' included).
TEST(LoraTags, ArgumentsRunToTheFirstClosingBracket) {
  const std::vector<ExtraNetworkTag> tags = find_extra_network_tags("<lora:a <lora:b:1> x");
  ASSERT_EQ(tags.size(), 1u);
  EXPECT_EQ(tags[0].network, "lora");
  EXPECT_EQ(tags[0].args, std::vector<std::string>({"a <lora", "b", "1"}));
  EXPECT_EQ(tags[0].begin, 0u);
  EXPECT_EQ(tags[0].end, 18u);
}

TEST(LoraTags, SpacesAndUnicode) {
  LoraTag t = extract_extra_networks("<lora: ink wash : 0.5 >").loras.at(0);
  EXPECT_EQ(t.name, "ink wash");
  EXPECT_FLOAT_EQ(t.te_weight, 0.5f);
  t = extract_extra_networks("猫 <lora:水墨画:0.4>").loras.at(0);
  EXPECT_EQ(t.name, "水墨画");
  // Network names are \w+: letters of any script count.
  EXPECT_EQ(find_extra_network_tags("<lörä:x>").size(), 1u);
}

TEST(LoraTags, WeightsMustBeNumbers) {
  std::string msg = invalid_argument([] { extract_extra_networks("a cat <lora:ink:abc>"); });
  EXPECT_NE(msg.find("<lora:ink:abc>"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'abc' is not a number"), std::string::npos) << msg;
  for (const std::string bad : {"<lora:a:nan>", "<lora:a:inf>", "<lora:a:1e400>", "<lora:a:0x10>", "<lora:a:1_0>",
                                "<lora:a:>", "<lora:a:1:two>", "<lora:a:unet=x>", "<lora:a:1.2.3>", "<lora:a:e5>"}) {
    msg = invalid_argument([&] { extract_extra_networks(bad); });
    EXPECT_NE(msg.find(bad), std::string::npos) << bad << ": " << msg;
  }
  msg = invalid_argument([] { extract_extra_networks("<lora::1>"); });
  EXPECT_NE(msg.find("no LoRA name"), std::string::npos) << msg;
  // What Python's float() takes.
  for (const auto& [text, w] : std::vector<std::pair<std::string, float>>{
           {"<lora:a:+0.5>", 0.5f}, {"<lora:a:.5>", 0.5f}, {"<lora:a:5.>", 5.0f}, {"<lora:a:1e-1>", 0.1f},
           {"<lora:a: 2 >", 2.0f}, {"<lora:a:-0>", 0.0f}}) {
    EXPECT_FLOAT_EQ(extract_extra_networks(text).loras.at(0).te_weight, w) << text;
  }
  // A bad tag of another network is never read.
  EXPECT_NO_THROW(extract_extra_networks("<hypernet:a:abc>"));
}

TEST(LoraTags, StripDoesNotCheck) {
  EXPECT_EQ(strip_extra_networks("a <lora:x:abc> b <hypernet:y> c"), "a  b  c");
  EXPECT_EQ(strip_extra_networks("plain (text:1.2)"), "plain (text:1.2)");
}

TEST(LoraTags, FormatWeight) {
  EXPECT_EQ(format_lora_weight(0.8f), "0.8");
  EXPECT_EQ(format_lora_weight(1.0f), "1");
  EXPECT_EQ(format_lora_weight(-0.25f), "-0.25");
  EXPECT_EQ(format_lora_weight(0.0f), "0");
}

// A1111 writes the prompt with its tags into the infotext; the model saw it without them.
TEST(LoraTags, InfotextKeepsThePromptAsWritten) {
  const std::string written = "a red fox <lora:fox:0.8>";
  const std::string used = strip_extra_networks(written);  // "a red fox "
  EXPECT_EQ(infotext_with_prompt("a red fox \nSteps: 2, Seed: 1", used, written),
            "a red fox <lora:fox:0.8>\nSteps: 2, Seed: 1");
  EXPECT_EQ(infotext_with_prompt("a red fox \nNegative prompt: blurry\nSteps: 2", used, written),
            "a red fox <lora:fox:0.8>\nNegative prompt: blurry\nSteps: 2");
  // Leading white space is trimmed by format_infotext.
  EXPECT_EQ(infotext_with_prompt("cat\nSteps: 2", strip_extra_networks("<lora:x:1> cat"), "<lora:x:1> cat"),
            "<lora:x:1> cat\nSteps: 2");
  // Only tags: the infotext has no prompt line.
  EXPECT_EQ(infotext_with_prompt("Steps: 2", "", "<lora:x:1>"), "<lora:x:1>\nSteps: 2");
  // Not the prompt it says: unchanged.
  EXPECT_EQ(infotext_with_prompt("a red fox in snow\nSteps: 2", used, written), "a red fox in snow\nSteps: 2");
  EXPECT_EQ(infotext_with_prompt("plain\nSteps: 2", "plain", "plain"), "plain\nSteps: 2");
}

TEST(LoraTags, CommandLineSpec) {
  LoraTag t = parse_lora_spec("detail:0.5:0.25");
  EXPECT_EQ(t.name, "detail");
  EXPECT_FLOAT_EQ(t.te_weight, 0.5f);
  EXPECT_FLOAT_EQ(t.unet_weight, 0.25f);
  t = parse_lora_spec("models/Lora/detail.safetensors");
  EXPECT_EQ(t.name, "models/Lora/detail.safetensors");
  EXPECT_EQ(t.te_weight, 1.0f);
  t = parse_lora_spec("/abs/path/x.safetensors:0.7");
  EXPECT_EQ(t.name, "/abs/path/x.safetensors");
  EXPECT_FLOAT_EQ(t.unet_weight, 0.7f);
  const std::string msg = invalid_argument([] { parse_lora_spec("detail:strong"); });
  EXPECT_NE(msg.find("--lora detail:strong"), std::string::npos) << msg;
  // A file whose name holds ':' is taken whole.
  const std::string odd = testing::temp_dir() + "/style:v2.safetensors";
  std::ofstream(odd) << "x";
  t = parse_lora_spec(odd);
  EXPECT_EQ(t.name, odd);
  EXPECT_EQ(t.te_weight, 1.0f);
}

}  // namespace
}  // namespace diffuse

#include <gtest/gtest.h>

#include "io/infotext.h"

using namespace diffuse;

namespace {

InfotextFields example() {
  InfotextFields f;
  f.prompt = "a photo of a cat";
  f.negative_prompt = "blurry";
  f.steps = 20;
  f.sampler = "DPM++ 2M";
  f.schedule_type = "Karras";
  f.cfg_scale = 7;
  f.seed = 1234;
  f.width = 512;
  f.height = 512;
  f.model_hash = "6ce0161689";
  f.model = "v1-5-pruned-emaonly";
  f.version = "v1.10.1";
  return f;
}

}  // namespace

// The example of ECOSYSTEM.md section 3, byte for byte.
TEST(Infotext, FormatsA1111Example) {
  EXPECT_EQ(format_infotext(example()),
            "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, "
            "CFG scale: 7, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
            "Version: v1.10.1");
}

TEST(Infotext, KeyOrderOptionalKeysAndQuoting) {
  InfotextFields f = example();
  f.negative_prompt.clear();
  f.cfg_scale = 7.5;
  f.model = "my, model: v2";
  f.vae = "vae-ft-mse";
  f.vae_hash = "abcdef0123";
  f.denoising_strength = 0.35;
  f.clip_skip = 2;
  f.ensd = 31337;
  f.rng = "CPU";
  f.variation_seed = 42;
  f.variation_seed_strength = 0.25;
  f.extra = {{"Hires upscale", "2"}, {"Lora hashes", "add_detail: 7c6bad76eb54"}, {"Note", "line1\nline2 \"q\""}};
  EXPECT_EQ(format_infotext(f),
            "a photo of a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234, "
            "Size: 512x512, Model hash: 6ce0161689, Model: \"my, model: v2\", VAE hash: abcdef0123, VAE: vae-ft-mse, "
            "Variation seed: 42, Variation seed strength: 0.25, Denoising strength: 0.35, Clip skip: 2, ENSD: 31337, "
            "RNG: CPU, Hires upscale: 2, Lora hashes: \"add_detail: 7c6bad76eb54\", "
            "Note: \"line1\\nline2 \\\"q\\\"\", Version: v1.10.1");
  // Clip skip 1 and empty values are dropped; an empty prompt leaves no blank first line.
  InfotextFields g;
  g.sampler = "Euler a";
  g.seed = -1;
  EXPECT_EQ(format_infotext(g), "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: -1, Size: 512x512");
}

TEST(Infotext, NumberFormatting) {
  EXPECT_EQ(infotext_number(7), "7");
  EXPECT_EQ(infotext_number(7.5), "7.5");
  EXPECT_EQ(infotext_number(0.35), "0.35");
  EXPECT_EQ(infotext_number(-2), "-2");
  EXPECT_EQ(infotext_quote("plain value"), "plain value");
  EXPECT_EQ(infotext_quote("a:b"), "\"a:b\"");
}

TEST(Infotext, RoundTrip) {
  InfotextFields f = example();
  f.prompt = "line one,\nline two (weighted:1.2)";
  f.negative_prompt = "bad hands\nworst quality";
  f.cfg_scale = 6.5;
  f.denoising_strength = 0.5;
  f.clip_skip = 2;
  f.rng = "GPU";
  f.model = "a, b";
  f.extra = {{"Hires upscaler", "Latent"}, {"Lora hashes", "x: 1, y: 2"}};
  InfotextFields p = parse_infotext(format_infotext(f));
  EXPECT_EQ(p.prompt, f.prompt);
  EXPECT_EQ(p.negative_prompt, f.negative_prompt);
  EXPECT_EQ(p.steps, 20);
  EXPECT_EQ(p.sampler, "DPM++ 2M");
  EXPECT_EQ(p.schedule_type, "Karras");
  EXPECT_EQ(p.cfg_scale, 6.5);
  EXPECT_EQ(p.seed, 1234);
  EXPECT_EQ(p.width, 512);
  EXPECT_EQ(p.height, 512);
  EXPECT_EQ(p.model_hash, "6ce0161689");
  EXPECT_EQ(p.model, "a, b");
  EXPECT_EQ(p.denoising_strength, 0.5);
  EXPECT_EQ(p.clip_skip, 2);
  EXPECT_EQ(p.rng, "GPU");
  EXPECT_EQ(p.version, "v1.10.1");
  EXPECT_EQ(p.extra, f.extra);
  EXPECT_EQ(format_infotext(p), format_infotext(f));
}

TEST(Infotext, ParsesOldA1111Text) {
  std::string text =
      "masterpiece, 1girl\nNegative prompt: lowres, bad anatomy\n"
      "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 3930367651, Size: 512x768, "
      "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.55, ENSD: 31337, "
      "Hires upscale: 2, Lora hashes: \"add_detail: 7c6bad76eb54\", Version: v1.6.0";
  InfotextFields p = parse_infotext(text);
  EXPECT_EQ(p.prompt, "masterpiece, 1girl");
  EXPECT_EQ(p.negative_prompt, "lowres, bad anatomy");
  EXPECT_EQ(p.steps, 28);
  EXPECT_EQ(p.sampler, "DPM++ 2M");
  EXPECT_EQ(p.schedule_type, "Karras");
  EXPECT_EQ(p.cfg_scale, 7.0);
  EXPECT_EQ(p.seed, 3930367651LL);
  EXPECT_EQ(p.width, 512);
  EXPECT_EQ(p.height, 768);
  EXPECT_EQ(p.clip_skip, 1);  // missing means 1
  EXPECT_EQ(p.ensd, 31337);
  ASSERT_EQ(p.extra.size(), 2u);
  EXPECT_EQ(p.extra[0], (std::pair<std::string, std::string>{"Hires upscale", "2"}));
  EXPECT_EQ(p.extra[1], (std::pair<std::string, std::string>{"Lora hashes", "add_detail: 7c6bad76eb54"}));
  EXPECT_EQ(p.version, "v1.6.0");

  // "Euler a" has no scheduler suffix; an explicit Schedule type prevents splitting.
  EXPECT_EQ(parse_infotext("p\nSteps: 1, Sampler: Euler a, Seed: 2").sampler, "Euler a");
  InfotextFields q = parse_infotext("p\nSteps: 1, Sampler: DPM++ 2M Karras, Schedule type: Uniform, Seed: 2");
  EXPECT_EQ(q.sampler, "DPM++ 2M Karras");
  EXPECT_EQ(q.schedule_type, "Uniform");
}

TEST(Infotext, TextWithoutParametersIsAllPrompt) {
  InfotextFields p = parse_infotext("just a prompt: with colon\nand a second line");
  EXPECT_EQ(p.prompt, "just a prompt: with colon\nand a second line");
  EXPECT_TRUE(p.negative_prompt.empty());
  EXPECT_TRUE(p.sampler.empty());
  EXPECT_TRUE(parse_infotext("").prompt.empty());
  // Garbage never throws.
  std::string junk;
  for (int i = 0; i < 3000; ++i) junk.push_back(static_cast<char>((i * 131) % 251));
  EXPECT_NO_THROW(parse_infotext(junk));
  EXPECT_NO_THROW(parse_infotext("a: \"unterminated, b: \\\", c: d, e: \"\""));
}

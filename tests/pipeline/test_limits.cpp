// Request limits: GenerationParams::validate refuses every out-of-range value
// with kInvalidArgument and a message that states the limit (the server
// forwards it to the client as is). Boundaries themselves are accepted.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

GenerationParams ok_params() {
  GenerationParams p;
  p.prompt = "a cat";
  p.width = 512;
  p.height = 512;
  p.steps = 20;
  return p;
}

// Runs validate and returns the message; fails the test when it is accepted
// or rejected with another error code.
std::string rejected(const GenerationParams& p) {
  try {
    p.validate();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "validate accepted the parameters";
  return "";
}

#define EXPECT_REJECTED_WITH(params, ...)                                                 \
  do {                                                                                    \
    const std::string msg_ = rejected(params);                                            \
    for (const char* part : {__VA_ARGS__}) EXPECT_NE(msg_.find(part), std::string::npos) \
        << "message lacks '" << part << "': " << msg_;                                    \
  } while (0)

TEST(Limits, DefaultsAndBoundariesAreAccepted) {
  GenerationParams p;  // all zeros / defaults: the family's defaults are used
  EXPECT_NO_THROW(p.validate());
  p = ok_params();
  p.width = 64;
  p.height = 4096;
  p.steps = 1000;
  p.images = 64;
  p.clip_skip = 12;
  p.cfg_scale = 100.0f;
  p.seed = std::numeric_limits<int64_t>::max();
  p.prompt = std::string(64 * 1024, 'a');
  EXPECT_NO_THROW(p.validate());
  p.schedule = "karras";
  p.sampler = "dpmpp_2m";
  EXPECT_NO_THROW(p.validate());
}

TEST(Limits, WidthAndHeight) {
  for (int v : {-8, 8, 56, 63, 65, 100, 4104, 8192, std::numeric_limits<int>::max(), std::numeric_limits<int>::min()}) {
    GenerationParams p = ok_params();
    p.width = v;
    EXPECT_REJECTED_WITH(p, "width", "multiple of 8", "64", "4096", std::to_string(v).c_str());
    p = ok_params();
    p.height = v;
    EXPECT_REJECTED_WITH(p, "height", "multiple of 8", "64", "4096");
  }
}

TEST(Limits, Steps) {
  for (int v : {-1, 1001, 1 << 30, std::numeric_limits<int>::min()}) {
    GenerationParams p = ok_params();
    p.steps = v;
    EXPECT_REJECTED_WITH(p, "steps", "1000", std::to_string(v).c_str());
  }
}

TEST(Limits, ImagesAndPromptLists) {
  for (int v : {0, -1, 65, 1000000}) {
    GenerationParams p = ok_params();
    p.images = v;
    EXPECT_REJECTED_WITH(p, "images", "64", std::to_string(v).c_str());
  }
  GenerationParams p = ok_params();
  p.prompts.assign(65, "x");  // the prompt list sets the count
  EXPECT_REJECTED_WITH(p, "images", "64", "65");
  p.prompts.assign(3, "x");
  p.negative_prompts.assign(2, "y");
  EXPECT_REJECTED_WITH(p, "negative_prompts", "one entry per prompt");
}

TEST(Limits, PromptBytes) {
  GenerationParams p = ok_params();
  p.prompt = std::string(64 * 1024 + 1, 'a');
  EXPECT_REJECTED_WITH(p, "prompts", "65536 bytes");
  // The limit covers the total over prompt, negative prompt and prompt lists.
  p.prompt = std::string(40 * 1024, 'a');
  p.negative_prompt = std::string(30 * 1024, 'b');
  EXPECT_REJECTED_WITH(p, "65536 bytes");
  p = ok_params();
  p.prompts.assign(2, std::string(33 * 1024, 'c'));
  EXPECT_REJECTED_WITH(p, "65536 bytes");
}

TEST(Limits, ClipSkipSeedCfg) {
  for (int v : {0, -1, 13}) {
    GenerationParams p = ok_params();
    p.clip_skip = v;
    EXPECT_REJECTED_WITH(p, "clip skip", "1", "12");
  }
  GenerationParams p = ok_params();
  p.seed = -2;
  EXPECT_REJECTED_WITH(p, "seed", ">= 0", "-1");
  for (float v : {std::nanf(""), std::numeric_limits<float>::infinity(), 100.5f, 1e30f}) {
    p = ok_params();
    p.cfg_scale = v;
    EXPECT_REJECTED_WITH(p, "cfg scale", "100");
  }
}

TEST(Limits, SamplerAndSchedule) {
  GenerationParams p = ok_params();
  p.sampler = "euler_b";
  EXPECT_REJECTED_WITH(p, "unknown sampler 'euler_b'", "available", "euler_a", "dpmpp_2m", "unipc");
  p = ok_params();
  p.sampler = std::string("euler\0x", 7);  // embedded NUL is not "euler"
  EXPECT_REJECTED_WITH(p, "unknown sampler");
  p = ok_params();
  p.schedule = "exponential";
  EXPECT_REJECTED_WITH(p, "schedule", "'default' or 'karras'", "exponential");
  p.schedule = "";
  EXPECT_REJECTED_WITH(p, "schedule");
}

}  // namespace
}  // namespace diffuse

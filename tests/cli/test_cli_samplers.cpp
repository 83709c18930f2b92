// `diffuse generate --sampler / --schedule` as a user drives them (issue #23):
// unknown names and unavailable pairs are usage errors (exit 2) listing the
// valid names; A1111's and ComfyUI's schedule spellings are accepted; a new
// sampler with a new schedule runs end to end on a tiny fixture model.
#include <gtest/gtest.h>

#include "io/png.h"
#include "sampling/sampler_catalog.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::RunResult;

RunResult run(const std::string& args) { return testing::run_command(std::string(DIFFUSE_BINARY) + " " + args); }

TEST(CliSamplers, UnknownNamesAreUsageErrors) {
  RunResult r = run("generate --model /nonexistent --prompt x --sampler dpmpp_4m");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown sampler 'dpmpp_4m'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(sampler_names_list()), std::string::npos) << r.out;

  r = run("generate --model /nonexistent --prompt x --schedule karas");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown schedule 'karas'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(schedule_names_list()), std::string::npos) << r.out;

  r = run("generate --model /nonexistent --prompt x --sampler ddim --schedule karras");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("karras schedule is not available for --sampler ddim (it runs with default)"), std::string::npos)
      << r.out;
}

TEST(CliSamplers, HelpListsSamplersAndSchedules) {
  const RunResult r = run("generate --help");
  EXPECT_EQ(r.code, 0);
  for (const char* s : {"dpm2_a", "dpmpp_2s_a", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "DPM++ 3M SDE",
                        "align_your_steps", "kl_optimal", "sgm_uniform", "polyexponential"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
}

TEST(CliSamplers, NewSamplerAndScheduleRunEndToEnd) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string out = testing::temp_dir() + "/img.png";
  // ComfyUI's "ddim_uniform" is our "ddim" schedule; "automatic" is "default".
  for (const char* pair : {"--sampler dpmpp_sde --schedule ddim_uniform", "--sampler dpm2_a --schedule automatic"}) {
    const RunResult r = run("generate --model " + testing::shell_quote(testing::fixtures_dir() + "/sd2/model") +
                            " --prompt 'a red cube' --steps 3 --width 64 --height 64 --seed 3 " + pair + " --output " +
                            testing::shell_quote(out));
    ASSERT_EQ(r.code, 0) << pair << ": " << r.out;
    const auto text = read_png_text(out);
    ASSERT_TRUE(text.count("parameters"));
    const std::string& params = text.at("parameters");
    if (std::string(pair).find("dpmpp_sde") != std::string::npos) {
      EXPECT_NE(params.find("Sampler: DPM++ SDE, Schedule type: DDIM"), std::string::npos) << params;
    } else {
      EXPECT_NE(params.find("Sampler: DPM2 a,"), std::string::npos) << params;
      EXPECT_EQ(params.find("Schedule type"), std::string::npos) << params;
    }
  }
}

}  // namespace
}  // namespace diffuse

// The few-step surfaces of the CLI as a user drives them (docs/few-step.md):
// the kind shown at load and by probe, the kind's defaults, --sampler tcd
// --eta, and the usage errors (exit 2) with the valid values listed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

RunResult run(const std::string& args) {
  return testing::run_command(std::string(DIFFUSE_BINARY) + " " + args + " 2>&1");
}

// The sd2 fixture as "tiny-sd2-turbo" with SD-Turbo's scheduler config.
std::string turbo_folder() {
  static std::string dir;
  if (!dir.empty()) return dir;
  const fs::path base = fs::path(testing::fixtures_dir()) / "sd2" / "model";
  const fs::path dst = fs::path(testing::temp_dir()) / "tiny-sd2-turbo";
  fs::create_directories(dst / "scheduler");
  for (const auto& e : fs::directory_iterator(base))
    if (e.path().filename() != "scheduler") fs::create_symlink(fs::canonical(e.path()), dst / e.path().filename());
  const nlohmann::json sched = {{"_class_name", "EulerAncestralDiscreteScheduler"}, {"beta_end", 0.012},
                                {"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085},
                                {"num_train_timesteps", 1000}, {"prediction_type", "epsilon"},
                                {"set_alpha_to_one", false}, {"steps_offset", 1}, {"timestep_spacing", "trailing"}};
  std::ofstream((dst / "scheduler/scheduler_config.json").string()) << sched.dump(1);
  return dir = dst.string();
}

TEST(CliFewStep, TurboRunsWithItsDefaultsAndSaysSo) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string out = testing::temp_dir() + "/turbo.png";
  const RunResult r = run("generate --device cpu --model " + testing::shell_quote(turbo_folder()) +
                          " --prompt 'a fox' --seed 3 -o " + testing::shell_quote(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("few-step model: turbo (guessed: its name contains 'turbo')"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1/1"), std::string::npos) << "one step: " << r.out;
  EXPECT_TRUE(fs::exists(out));
  const RunResult probe = run("probe " + testing::shell_quote(turbo_folder()));
  ASSERT_EQ(probe.code, 0) << probe.out;
  EXPECT_NE(probe.out.find("few-step: turbo"), std::string::npos) << probe.out;
  const RunResult json = run("probe --json " + testing::shell_quote(turbo_folder()));
  ASSERT_EQ(json.code, 0) << json.out;
  const nlohmann::json j = nlohmann::json::parse(json.out.substr(json.out.find('{')));
  EXPECT_EQ(j["few_step"]["kind"], "turbo");
  EXPECT_EQ(j["few_step"]["defaults"]["steps"], 1);
  EXPECT_EQ(j["few_step"]["defaults"]["sampler"], "euler_a");
}

TEST(CliFewStep, TcdWithEta) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string out = testing::temp_dir() + "/tcd.png";
  const RunResult r = run("generate --device cpu --model " + testing::shell_quote(turbo_folder()) +
                          " --prompt 'a fox' --sampler tcd --eta 0.5 --steps 2 --seed 3 -o " + testing::shell_quote(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(out));
  EXPECT_NE(run("generate --help").out.find("--eta"), std::string::npos);
}

TEST(CliFewStep, UsageErrorsListWhatIsAllowed) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string model = " --device cpu --model " + testing::shell_quote(turbo_folder()) + " --prompt x -o " +
                            testing::shell_quote(testing::temp_dir() + "/x.png");
  RunResult r = run("generate" + model + " --sampler tcd --schedule karras");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("it runs with default"), std::string::npos) << r.out;
  r = run("generate" + model + " --sampler tcd --eta 1.5");
  EXPECT_EQ(r.code, 2) << r.out;
  r = run("generate" + model + " --sampler lcm --steps 60");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("steps must be in [1, 50]"), std::string::npos) << r.out;
  r = run("bench --kind nope");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("turbo"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace diffuse

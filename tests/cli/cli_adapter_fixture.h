// A user's working folder for the adapter CLI tests (ControlNet, IP-Adapter):
// the SD 1.x fixture model, a temporary folder with models/ControlNet (the
// default --controlnet-dir), and `diffuse generate` run there with one fixed
// small text-to-image set-up plus the flags under test.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/png.h"
#include "test_util.h"

namespace diffuse::testing {

class CliAdapterFixture : public ::testing::Test {
 protected:
  // Call in SetUp(), after DIFFUSE_REQUIRE_FIXTURES().
  void make_work_folder() {
    model_ = fixtures_dir() + "/sd1/model";
    work_ = temp_dir();
    std::filesystem::create_directories(work_ + "/models/ControlNet");
  }
  // 64x64, 3 euler steps, seed 77, on the CPU, written to work_/out.
  RunResult generate(const std::string& args, const std::string& out) {
    return run_command("cd " + shell_quote(work_) + " && " + DIFFUSE_BINARY + " generate --device cpu --model " +
                       shell_quote(model_) + " --prompt 'a red fox' --steps 3 -W 64 -H 64 --seed 77 --sampler euler "
                       "--output " + shell_quote(work_ + "/" + out) + " " + args);
  }
  std::vector<uint8_t> pixels(const std::string& out) {
    const std::string bytes = read_file(work_ + "/" + out);
    return read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()).rgb;
  }
  std::string model_, work_;
};

}  // namespace diffuse::testing

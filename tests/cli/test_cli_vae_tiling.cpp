// `diffuse generate --vae-tiling`: "on" decodes in tiles (the JSON says
// vae_tiled) and gives the untiled picture up to rounding (the method is exact
// up to f32 rounding: docs/vae-tiling.md); "off" and "auto" on a size that fits
// do not tile; a bad value is a usage error (exit 2) before any model loads.
#include <nlohmann/json.hpp>

#include "io/png.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::RunResult;

class CliVaeTiling : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::temp_dir(); }
  // The built-in demo model at 576x512: its VAE's default tile is 512x512
  // pixels, so a tiled decode has two tiles side by side.
  RunResult generate(const std::string& args, const std::string& out) {
    return testing::run_command(std::string(DIFFUSE_BINARY) + " generate --device cpu --steps 2 -W 576 -H 512 " +
                                "--seed 5 --sampler euler --json 'a red circle on a blue background' --output " +
                                testing::shell_quote(dir_ + "/" + out) + " " + args);
  }
  static nlohmann::json json_of(const RunResult& r) { return nlohmann::json::parse(r.out.substr(r.out.find("{\n"))); }
  PngImage image(const std::string& out) {
    const std::string bytes = testing::read_file(dir_ + "/" + out);
    return read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::string dir_;
};

TEST_F(CliVaeTiling, OnTilesAndMatchesTheUntiledPicture) {
  RunResult off = generate("--vae-tiling off", "off.png");
  ASSERT_EQ(off.code, 0) << off.out;
  EXPECT_FALSE(json_of(off)["vae_tiled"].get<bool>());
  RunResult on = generate("--vae-tiling on", "on.png");
  ASSERT_EQ(on.code, 0) << on.out;
  EXPECT_TRUE(json_of(on)["vae_tiled"].get<bool>());
  RunResult automatic = generate("", "auto.png");  // the default: this size fits in memory
  ASSERT_EQ(automatic.code, 0) << automatic.out;
  EXPECT_FALSE(json_of(automatic)["vae_tiled"].get<bool>());

  const PngImage a = image("off.png"), b = image("on.png");
  ASSERT_EQ(a.width, 576);
  ASSERT_EQ(b.width, 576);
  ASSERT_EQ(a.rgb.size(), b.rgb.size());
  int max_diff = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) max_diff = std::max(max_diff, std::abs(int(a.rgb[i]) - int(b.rgb[i])));
  EXPECT_LE(max_diff, 1) << "tiled and untiled decodes differ by f32 rounding only";
  EXPECT_EQ(image("auto.png").rgb, a.rgb);
}

TEST_F(CliVaeTiling, BadValueIsAUsageError) {
  RunResult r = generate("--vae-tiling sideways", "bad.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("sideways"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("auto, on or off"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace diffuse

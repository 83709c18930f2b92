// `diffuse serve --random-model ARCH` (ServerOptions::random_models,
// ModelRegistry::Options::random_archs): full-size architectures with random
// weights, for tools/bench_live.py. Only the listing and the validation here:
// loading one builds GBs of weights (the bench on the GPU machine does that).
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "server/model_registry.h"
#include "server/server.h"

namespace diffuse::testing {
namespace {

TEST(RandomModels, ListedFirstWithFamilyAndNativeSize) {
  server::ModelRegistry::Options o;
  o.random_archs = {"sdxl", "sd21", "sd15"};
  o.scan_hf_cache = false;
  server::ModelRegistry registry(o);
  const auto models = registry.list();
  ASSERT_EQ(models.size(), 3u);
  EXPECT_EQ(models[0].id, "random-sdxl");
  EXPECT_EQ(models[0].family, "sdxl");
  EXPECT_EQ(models[0].default_width, 1024);
  EXPECT_EQ(models[1].id, "random-sd21");
  EXPECT_EQ(models[1].family, "sd2");
  EXPECT_EQ(models[1].default_height, 768);
  EXPECT_EQ(models[2].id, "random-sd15");
  EXPECT_EQ(models[2].family, "sd1");
  EXPECT_EQ(models[2].default_width, 512);
  for (const auto& m : models) EXPECT_EQ(m.source, "random") << m.id;
  EXPECT_EQ(registry.default_model(), "random-sdxl");
  ASSERT_TRUE(registry.find("random-sd21").has_value());
  // A rescan keeps them (and where they are listed).
  registry.refresh();
  ASSERT_EQ(registry.list().size(), 3u);
  EXPECT_EQ(registry.list()[0].id, "random-sdxl");
}

TEST(RandomModels, UnknownArchitectureIsRefusedByName) {
  server::ServerOptions o;
  o.random_models = {"sd21"};
  EXPECT_NO_THROW(o.validate());
  o.random_models = {"sd21", "sd3"};
  try {
    o.validate();
    FAIL() << "--random-model sd3 must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    const std::string what = e.what();
    EXPECT_NE(what.find("'sd3'"), std::string::npos) << what;
    EXPECT_NE(what.find("sd15, sd21 and sdxl"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace diffuse::testing

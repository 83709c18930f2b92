// `diffuse models` and `--model org/name` against a Hugging Face cache laid
// out exactly as huggingface_hub writes it: blobs named by hash, relative
// symlinks from snapshots/<commit>/..., refs/main holding the commit.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/sha256.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

using testing::RunResult;

RunResult run_with_env(const std::string& env, const std::string& args) {
  return testing::run_command(env + " " + std::string(DIFFUSE_BINARY) + " " + args);
}

// Copies a diffusers folder into <cache>/models--org--name the way huggingface_hub does.
void write_hf_cache(const fs::path& cache, const std::string& repo, const fs::path& src) {
  std::string folder = "models--" + repo;
  folder.replace(folder.find('/'), 1, "--");
  const fs::path storage = cache / folder;
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  fs::create_directories(storage / "blobs");
  fs::create_directories(storage / "refs");
  std::ofstream(storage / "refs" / "main") << commit;
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), src);
    const std::string blob = sha256_file(e.path().string());
    fs::copy_file(e.path(), storage / "blobs" / blob, fs::copy_options::overwrite_existing);
    const fs::path link = storage / "snapshots" / commit / rel;
    fs::create_directories(link.parent_path());
    // Relative link: ../../blobs/<hash>, one more ../ per folder level.
    fs::path target = fs::path("..") / "..";
    for (auto it = rel.begin(); std::next(it) != rel.end(); ++it) target /= "..";
    fs::create_symlink(target / "blobs" / blob, link);
  }
}

TEST(CliHub, CacheWrittenLikeHuggingfaceHubIsListedAndUsed) {
  DIFFUSE_REQUIRE_FIXTURES();
  const fs::path cache = fs::path(testing::temp_dir()) / "hub";
  write_hf_cache(cache, "tiny-org/tiny-sd1", testing::fixtures_dir() + "/sd1/model");
  const std::string env = "HF_HUB_CACHE=" + cache.string() + " HF_HUB_OFFLINE=1 XDG_CACHE_HOME=" + testing::temp_dir();

  RunResult models = run_with_env(env, "models");
  ASSERT_EQ(models.code, 0) << models.out;
  EXPECT_NE(models.out.find("tiny-org/tiny-sd1"), std::string::npos) << models.out;
  EXPECT_NE(models.out.find("sd1"), std::string::npos) << models.out;

  const std::string out = testing::temp_dir() + "/from-cache.png";
  RunResult gen = run_with_env(env, "generate --model tiny-org/tiny-sd1 --prompt 'a red cube' --steps 2 "
                                    "--width 64 --height 64 --seed 3 --output " + out);
  ASSERT_EQ(gen.code, 0) << gen.out;
  EXPECT_TRUE(fs::exists(out));

  // A repo that is not in the cache: the error says which command fixes it.
  RunResult missing = run_with_env(env, "generate --model other-org/missing --prompt x");
  EXPECT_EQ(missing.code, 1) << missing.out;
  EXPECT_NE(missing.out.find("diffuse pull other-org/missing"), std::string::npos) << missing.out;
  RunResult alias = run_with_env(env, "generate --model sdxl --prompt x");
  EXPECT_NE(alias.out.find("diffuse pull sdxl"), std::string::npos) << alias.out;
}

}  // namespace
}  // namespace diffuse

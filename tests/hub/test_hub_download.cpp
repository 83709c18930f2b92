// hub_download / pull_pipeline against a real HTTP server on 127.0.0.1 that
// behaves like huggingface.co (tests/hub/fake_hub.h): full pull, resume after
// a dropped connection (in the same run, and by a rerun), a corrupted byte, a
// gated repo, no-op second pull, and the cache layout huggingface_hub expects.
// The fault cases of the retry loop are in test_hub_resume.cpp.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>

#include "core/error.h"
#include "hub/fake_hub.cpp"  // NOLINT: see fake_hub.cpp, CMake builds only test_*.cpp
#include "hub/hub.h"
#include "io/sha256.h"
#include "test_util.h"

namespace fs = std::filesystem;
using diffuse::Error;
using diffuse::ErrorCode;
using diffuse::testing::FakeHub;
using diffuse::testing::random_bytes;
using namespace diffuse::hub;

namespace {

constexpr const char* kRepo = "org/tiny-sd";
constexpr const char* kCommit = "0123456789abcdef0123456789abcdef01234567";

std::string sha(const std::string& s) { return diffuse::sha256_hex(s.data(), s.size()); }

// A diffusers SD1-style pipeline with weights in every form a repo may hold.
FakeHub::Repo tiny_pipeline() {
  FakeHub::Repo r;
  r.commit = kCommit;
  auto& f = r.files;
  f["model_index.json"] =
      R"({"_class_name":"StableDiffusionPipeline","_diffusers_version":"0.30.0",)"
      R"("feature_extractor":["transformers","CLIPImageProcessor"],"requires_safety_checker":true,)"
      R"("safety_checker":["stable_diffusion","StableDiffusionSafetyChecker"],"scheduler":["diffusers","PNDMScheduler"],)"
      R"("text_encoder":["transformers","CLIPTextModel"],"tokenizer":["transformers","CLIPTokenizer"],)"
      R"("unet":["diffusers","UNet2DConditionModel"],"vae":["diffusers","AutoencoderKL"]})";
  f["unet/config.json"] = R"({"_class_name":"UNet2DConditionModel","sample_size":8})";
  f["unet/diffusion_pytorch_model.safetensors"] = random_bytes(200000, 1);
  f["unet/diffusion_pytorch_model.fp16.safetensors"] = random_bytes(100000, 2);
  f["unet/diffusion_pytorch_model.bin"] = random_bytes(5000, 3);
  f["vae/config.json"] = R"({"_class_name":"AutoencoderKL","latent_channels":4})";
  f["vae/diffusion_pytorch_model.safetensors"] = random_bytes(50000, 4);
  f["text_encoder/config.json"] = R"({"architectures":["CLIPTextModel"],"hidden_size":32})";
  f["text_encoder/model.safetensors.index.json"] =
      R"({"metadata":{"total_size":60000},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
      R"("b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}})";
  f["text_encoder/model-00001-of-00002.safetensors"] = random_bytes(30000, 5);
  f["text_encoder/model-00002-of-00002.safetensors"] = random_bytes(30000, 6);
  f["text_encoder/pytorch_model.bin"] = random_bytes(3000, 7);
  f["tokenizer/vocab.json"] = R"({"a</w>":0,"b</w>":1})";
  f["tokenizer/merges.txt"] = "#version: 0.2\na b\n";
  f["tokenizer/tokenizer_config.json"] = R"({"model_max_length":77})";
  f["tokenizer/special_tokens_map.json"] = R"({"bos_token":"<|startoftext|>"})";
  f["scheduler/scheduler_config.json"] = R"({"_class_name":"PNDMScheduler","num_train_timesteps":1000})";
  f["safety_checker/config.json"] = R"({"x":1})";
  f["safety_checker/model.safetensors"] = random_bytes(8000, 8);
  f["feature_extractor/preprocessor_config.json"] = R"({"crop_size":224})";
  f["README.md"] = "# tiny\n";
  f["v1-5-pruned-emaonly.safetensors"] = random_bytes(40000, 9);
  return r;
}

const std::vector<std::string> kPipelineFiles = {
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "scheduler/scheduler_config.json",
};

std::string read(const fs::path& p) { return diffuse::testing::read_file(p.string()); }

class HubDownload : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = tiny_pipeline();
    hub_.add_repo(kRepo, repo_);
    cache_ = diffuse::testing::temp_dir();
    opts_.endpoint = hub_.endpoint();
    opts_.cache_dir = cache_;
  }
  fs::path storage() const { return fs::path(cache_) / "models--org--tiny-sd"; }
  fs::path snapshot() const { return storage() / "snapshots" / kCommit; }
  fs::path blob_of(const std::string& path) const { return storage() / "blobs" / sha(repo_.files.at(path)); }

  FakeHub hub_;
  FakeHub::Repo repo_;
  std::string cache_;
  HubOptions opts_;
};

ErrorCode code_of(const std::function<void()>& fn, std::string* message) {
  try {
    fn();
  } catch (const Error& e) {
    *message = e.what();
    return e.code();
  }
  ADD_FAILURE() << "no diffuse::Error thrown";
  return ErrorCode::kRuntime;
}

}  // namespace

TEST_F(HubDownload, FullPullFetchesExactlyThePipelineInCacheLayout) {
  std::map<std::string, DownloadProgress> last;
  opts_.progress = [&](const DownloadProgress& p) {
    EXPECT_FALSE(last[p.path].done) << "progress after done for " << p.path;
    last[p.path] = p;
  };
  std::string snap = pull_pipeline(kRepo, PullOptions{}, opts_);
  EXPECT_EQ(snap, snapshot().string());
  EXPECT_EQ(read(storage() / "refs" / "main"), kCommit);

  std::set<std::string> pulled;
  for (auto it = fs::recursive_directory_iterator(snap); it != fs::recursive_directory_iterator(); ++it)
    if (!it->is_directory()) pulled.insert(it->path().lexically_relative(snap).generic_string());
  EXPECT_EQ(pulled, std::set<std::string>(kPipelineFiles.begin(), kPipelineFiles.end()));
  for (const auto& f : kPipelineFiles) {
    EXPECT_EQ(read(fs::path(snap) / f), repo_.files.at(f)) << f;
    ASSERT_TRUE(last.count(f)) << "no progress for " << f;
    EXPECT_TRUE(last[f].done);
    EXPECT_EQ(last[f].downloaded, repo_.files.at(f).size()) << f;
  }
  // huggingface_hub layout: relative links into blobs/, LFS blobs named by sha256.
  fs::path unet = fs::path(snap) / "unet/diffusion_pytorch_model.safetensors";
  ASSERT_TRUE(fs::is_symlink(unet));
  EXPECT_EQ(fs::read_symlink(unet).string(), "../../../blobs/" + sha(repo_.files.at("unet/diffusion_pytorch_model.safetensors")));
  ASSERT_TRUE(fs::is_symlink(fs::path(snap) / "model_index.json"));
  EXPECT_EQ(fs::read_symlink(fs::path(snap) / "model_index.json").string(),
            "../../blobs/" + sha(repo_.files.at("model_index.json")).substr(0, 40));
  size_t blobs = std::distance(fs::directory_iterator(storage() / "blobs"), fs::directory_iterator());
  EXPECT_EQ(blobs, kPipelineFiles.size());
  // Weights came through the CDN redirect, once each; nothing else was fetched.
  EXPECT_EQ(hub_.count("GET", "/blobs/"), 4);
  EXPECT_EQ(hub_.count("GET", "safety_checker"), 0);
  EXPECT_EQ(hub_.count("HEAD", "safety_checker"), 0);
  EXPECT_EQ(hub_.count("GET", "/api/models/org/tiny-sd/revision/main"), 1);
}

TEST_F(HubDownload, VariantPrefersFp16AndFallsBackPerComponent) {
  PullOptions p;
  p.variant = "fp16";
  std::string snap = pull_pipeline(kRepo, p, opts_);
  EXPECT_EQ(read(fs::path(snap) / "unet/diffusion_pytorch_model.fp16.safetensors"),
            repo_.files.at("unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(snap) / "unet/diffusion_pytorch_model.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(snap) / "vae/diffusion_pytorch_model.safetensors"));  // vae has no fp16
}

TEST_F(HubDownload, SecondPullIsANoOp) {
  std::string first = pull_pipeline(kRepo, PullOptions{}, opts_);
  auto mtime = fs::last_write_time(blob_of("unet/diffusion_pytorch_model.safetensors"));
  hub_.clear_requests();
  std::string second = pull_pipeline(kRepo, PullOptions{}, opts_);
  EXPECT_EQ(first, second);
  EXPECT_EQ(hub_.count("GET", "/blobs/"), 0);
  EXPECT_EQ(hub_.count("GET", "/resolve/"), 0);
  EXPECT_EQ(hub_.count("HEAD"), 0);                    // files pinned to a cached commit need no HEAD
  EXPECT_EQ(hub_.count("GET", "/api/models/"), 1);     // only "what is main now?"
  EXPECT_EQ(fs::last_write_time(blob_of("unet/diffusion_pytorch_model.safetensors")), mtime);

  // A single file by branch name: one HEAD to learn the commit, no body.
  hub_.clear_requests();
  std::string p = hub_download(kRepo, "unet/diffusion_pytorch_model.safetensors", "main", opts_);
  EXPECT_EQ(p, (snapshot() / "unet/diffusion_pytorch_model.safetensors").string());
  EXPECT_EQ(hub_.count("HEAD", "/resolve/main/unet/diffusion_pytorch_model.safetensors"), 1);
  EXPECT_EQ(hub_.count("GET"), 0);
}

TEST_F(HubDownload, BrokenConnectionIsResumedInTheSameRun) {
  const std::string weights = "unet/diffusion_pytorch_model.safetensors";
  const std::string expected = sha(repo_.files.at(weights));
  hub_.cut_blob_gets(expected, 80000, 2);  // two cuts, 80000 bytes each
  opts_.retry_base_delay_ms = 1;
  std::vector<std::string> notes;
  opts_.progress = [&](const DownloadProgress& p) {
    if (p.path == weights && !p.note.empty() && (notes.empty() || notes.back() != p.note)) notes.push_back(p.note);
  };
  std::string snap = pull_pipeline(kRepo, PullOptions{}, opts_);

  std::vector<std::string> ranges;
  for (const auto& r : hub_.requests())
    if (r.method == "GET" && r.target == "/blobs/" + expected) ranges.push_back(r.range);
  EXPECT_EQ(ranges, (std::vector<std::string>{"", "bytes=80000-", "bytes=160000-"}));
  EXPECT_EQ(diffuse::sha256_file((fs::path(snap) / weights).string()), expected);
  EXPECT_EQ(read(fs::path(snap) / weights), repo_.files.at(weights));
  fs::path part = blob_of(weights);
  part += ".incomplete";
  EXPECT_FALSE(fs::exists(part));
  EXPECT_EQ(resolve_cached(kRepo, opts_).value_or(""), snap);
  std::string all;
  for (const auto& n : notes) all += n + "\n";
  EXPECT_NE(all.find("resumed at 78.1 KiB (attempt 2/5)"), std::string::npos) << all;
  EXPECT_NE(all.find("resumed at 156.2 KiB (attempt 3/5)"), std::string::npos) << all;
  EXPECT_NE(all.find("interrupted at 78.1 KiB"), std::string::npos) << all;
}

TEST_F(HubDownload, RerunResumesWhatAGivenUpPullLeft) {
  const std::string weights = "unet/diffusion_pytorch_model.safetensors";
  const std::string expected = sha(repo_.files.at(weights));
  hub_.cut_blob_gets(expected, 80000, 2);
  opts_.download_attempts = 2;
  opts_.retry_base_delay_ms = 1;
  std::string msg;
  EXPECT_EQ(code_of([&] { pull_pipeline(kRepo, PullOptions{}, opts_); }, &msg), ErrorCode::kIo);
  EXPECT_NE(msg.find("download of org/tiny-sd/" + weights + " gave up after 2 attempts"), std::string::npos) << msg;
  EXPECT_NE(msg.find("160000 of 200000 bytes are kept"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rerun to resume"), std::string::npos) << msg;
  fs::path part = blob_of(weights);
  part += ".incomplete";
  ASSERT_TRUE(fs::exists(part));
  EXPECT_EQ(fs::file_size(part), 160000u);
  EXPECT_FALSE(fs::exists(blob_of(weights)));
  EXPECT_FALSE(fs::exists(storage() / "refs" / "main"));  // an unfinished pull is not "main"
  EXPECT_FALSE(resolve_cached(kRepo, opts_).has_value());
  ASSERT_EQ(scan_hf_cache(cache_).size(), 1u);
  EXPECT_TRUE(scan_hf_cache(cache_)[0].has_incomplete);

  hub_.clear_requests();
  std::string first_note;
  opts_.progress = [&](const DownloadProgress& p) {
    if (p.path == weights && first_note.empty()) first_note = p.note;
  };
  std::string snap = pull_pipeline(kRepo, PullOptions{}, opts_);
  std::vector<std::string> ranges;
  for (const auto& r : hub_.requests())
    if (r.method == "GET" && r.target == "/blobs/" + expected) ranges.push_back(r.range);
  EXPECT_EQ(ranges, std::vector<std::string>{"bytes=160000-"});
  EXPECT_EQ(first_note, "resumed at 156.2 KiB (partial file from an earlier run)");
  EXPECT_EQ(diffuse::sha256_file((fs::path(snap) / weights).string()), expected);
  EXPECT_FALSE(fs::exists(part));
  EXPECT_EQ(resolve_cached(kRepo, opts_).value_or(""), snap);
}

TEST_F(HubDownload, CorruptedByteIsDetectedAndNothingIsPlaced) {
  const std::string weights = "vae/diffusion_pytorch_model.safetensors";
  hub_.corrupt_blob(sha(repo_.files.at(weights)), true);
  std::string msg;
  EXPECT_EQ(code_of([&] { hub_download(kRepo, weights, "main", opts_); }, &msg), ErrorCode::kIo);
  std::string corrupted = repo_.files.at(weights);
  corrupted[corrupted.size() / 2] ^= 0x5a;  // what FakeHub::corrupt_blob serves
  EXPECT_NE(msg.find("sha256 mismatch for org/tiny-sd/" + weights), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected " + sha(repo_.files.at(weights)) + ", got " + sha(corrupted)), std::string::npos) << msg;
  EXPECT_EQ(hub_.count("GET", "/blobs/"), 1);  // a whole file with a wrong hash is not retried
  fs::path part = blob_of(weights);
  part += ".incomplete";
  EXPECT_FALSE(fs::exists(blob_of(weights)));
  EXPECT_FALSE(fs::exists(part));
  EXPECT_FALSE(fs::exists(fs::symlink_status(snapshot() / weights)));

  hub_.corrupt_blob(sha(repo_.files.at(weights)), false);
  EXPECT_EQ(read(hub_download(kRepo, weights, "main", opts_)), repo_.files.at(weights));
}

TEST_F(HubDownload, GatedRepoNeedsTheToken) {
  FakeHub::Repo gated = tiny_pipeline();
  gated.required_token = "hf_test_token";
  hub_.add_repo("gated/model", gated);
  std::string msg;
  EXPECT_EQ(code_of([&] { pull_pipeline("gated/model", PullOptions{}, opts_); }, &msg), ErrorCode::kInvalidArgument);
  EXPECT_NE(msg.find("repo gated/model is gated or private"), std::string::npos) << msg;
  EXPECT_NE(msg.find("accept its licence on " + hub_.endpoint() + "/gated/model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("HF_TOKEN"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(fs::path(cache_) / "models--gated--model" / "blobs"));

  opts_.token = "hf_wrong";
  EXPECT_EQ(code_of([&] { hub_download("gated/model", "model_index.json", "main", opts_); }, &msg),
            ErrorCode::kInvalidArgument);
  EXPECT_NE(msg.find("token in use was refused"), std::string::npos) << msg;

  opts_.token = "hf_test_token";
  hub_.clear_requests();
  std::string snap = pull_pipeline("gated/model", PullOptions{}, opts_);
  EXPECT_EQ(read(fs::path(snap) / "unet/diffusion_pytorch_model.safetensors"),
            gated.files.at("unet/diffusion_pytorch_model.safetensors"));
  for (const auto& r : hub_.requests())
    if (r.target.find("/resolve/") != std::string::npos) {
      EXPECT_EQ(r.authorization, "Bearer hf_test_token");
    }
}

TEST_F(HubDownload, MissingThingsAreNamed) {
  std::string msg;
  EXPECT_EQ(code_of([&] { hub_download(kRepo, "unet/nope.safetensors", "main", opts_); }, &msg), ErrorCode::kNotFound);
  EXPECT_NE(msg.find("'unet/nope.safetensors'"), std::string::npos) << msg;
  EXPECT_EQ(code_of([&] { hub_download("org/absent", "model_index.json", "main", opts_); }, &msg), ErrorCode::kNotFound);
  EXPECT_NE(msg.find("repo org/absent not found"), std::string::npos) << msg;
  EXPECT_EQ(code_of([&] { pull_pipeline(kRepo, PullOptions{"v9", "", ""}, opts_); }, &msg), ErrorCode::kNotFound);
  EXPECT_NE(msg.find("revision 'v9'"), std::string::npos) << msg;
  EXPECT_EQ(code_of([&] { hub_download(kRepo, "../etc/passwd", "main", opts_); }, &msg), ErrorCode::kInvalidArgument);
}

TEST_F(HubDownload, SingleFileAndScan) {
  PullOptions p;
  p.single_file = "v1-5-pruned-emaonly.safetensors";
  std::string file = pull_pipeline(kRepo, p, opts_);
  EXPECT_EQ(file, (snapshot() / p.single_file).string());
  EXPECT_EQ(read(file), repo_.files.at(p.single_file));
  std::string snap = pull_pipeline(kRepo, PullOptions{}, opts_);

  std::vector<CachedModel> models = scan_hf_cache(cache_);
  ASSERT_EQ(models.size(), 1u);
  const CachedModel& m = models[0];
  EXPECT_EQ(m.repo_id, kRepo);
  EXPECT_EQ(m.commit, kCommit);
  EXPECT_EQ(m.snapshot, snap);
  EXPECT_TRUE(m.is_diffusers);
  EXPECT_EQ(m.single_files, std::vector<std::string>{p.single_file});
  EXPECT_EQ(m.refs, std::vector<std::string>{"main"});
  EXPECT_FALSE(m.has_incomplete);
  uint64_t expected = repo_.files.at(p.single_file).size();
  for (const auto& f : kPipelineFiles) expected += repo_.files.at(f).size();
  EXPECT_EQ(m.size_on_disk, expected);

  p.single_file = "missing.ckpt";
  std::string msg;
  EXPECT_EQ(code_of([&] { pull_pipeline(kRepo, p, opts_); }, &msg), ErrorCode::kNotFound);
  EXPECT_NE(msg.find("v1-5-pruned-emaonly.safetensors"), std::string::npos) << msg;  // suggests what exists
}

TEST_F(HubDownload, UnreachableHubFallsBackToTheCacheAndOfflineMode) {
  std::string snap = pull_pipeline(kRepo, PullOptions{}, opts_);
  HubOptions down = opts_;
  down.endpoint = "http://127.0.0.1:1";  // nothing listens there
  EXPECT_EQ(hub_download(kRepo, "unet/config.json", "main", down), (fs::path(snap) / "unet/config.json").string());
  std::string msg;
  EXPECT_EQ(code_of([&] { hub_download(kRepo, "README.md", "main", down); }, &msg), ErrorCode::kIo);
  EXPECT_NE(msg.find("cannot reach http://127.0.0.1:1"), std::string::npos) << msg;

  HubOptions offline = opts_;
  offline.offline = true;
  hub_.clear_requests();
  EXPECT_EQ(pull_pipeline(kRepo, PullOptions{}, offline), snap);
  EXPECT_EQ(hub_.requests().size(), 0u);
  EXPECT_EQ(code_of([&] { hub_download(kRepo, "README.md", "main", offline); }, &msg), ErrorCode::kNotFound);
}

TEST_F(HubDownload, DiskFullIsReported) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string weights = "vae/diffusion_pytorch_model.safetensors";
  fs::create_directories(storage() / "blobs");
  fs::path part = blob_of(weights);
  part += ".incomplete";
  fs::create_symlink("/dev/full", part);  // every write fails with ENOSPC
  std::string msg;
  EXPECT_EQ(code_of([&] { hub_download(kRepo, weights, "main", opts_); }, &msg), ErrorCode::kIo);
  EXPECT_NE(msg.find("disk full"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(blob_of(weights)));
}

TEST_F(HubDownload, CancelKeepsThePartial) {
  const std::string weights = "unet/diffusion_pytorch_model.safetensors";
  bool transfer_started = false;  // set by the first progress report of the body transfer
  opts_.progress = [&](const DownloadProgress&) { transfer_started = true; };
  opts_.cancel = [&] { return transfer_started; };
  std::string msg;
  EXPECT_EQ(code_of([&] { hub_download(kRepo, weights, "main", opts_); }, &msg), ErrorCode::kCancelled);
  EXPECT_NE(msg.find("cancelled"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rerun to resume"), std::string::npos) << msg;
  fs::path part = blob_of(weights);
  part += ".incomplete";
  EXPECT_TRUE(fs::exists(part));
  EXPECT_FALSE(fs::exists(blob_of(weights)));

  opts_.cancel = nullptr;
  EXPECT_EQ(diffuse::sha256_file(hub_download(kRepo, weights, "main", opts_)), sha(repo_.files.at(weights)));
}

TEST_F(HubDownload, FixturePipelineRoundTrips) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = diffuse::testing::fixtures_dir() + "/sd1/model";
  FakeHub::Repo fixture;
  fixture.commit = "fedcba9876543210fedcba9876543210fedcba98";
  fixture.files = FakeHub::read_tree(dir);
  hub_.add_repo("fixtures/sd1", fixture);
  std::string snap = pull_pipeline("fixtures/sd1", PullOptions{}, opts_);
  for (const auto& [path, bytes] : fixture.files) {
    ASSERT_TRUE(fs::exists(fs::path(snap) / path)) << path;
    EXPECT_EQ(read(fs::path(snap) / path), bytes) << path;
  }
  EXPECT_EQ(resolve_cached("fixtures/sd1", opts_).value_or(""), snap);
}

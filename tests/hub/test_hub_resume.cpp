// The retry loop of hub_download (hub.cpp BlobDownload) against the fake hub
// with scripted faults per GET of a blob: connections cut or stalled mid-file,
// 5xx/429 answers, a server that ignores Range, a file that changes between
// tries, 416, errors that must not be retried, and giving up. Every test uses
// a backoff of a few milliseconds, so each runs well under a second.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

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

constexpr const char* kRepo = "org/flaky";
constexpr const char* kCommit = "89abcdef0123456789abcdef0123456789abcdef";
constexpr const char* kWeights = "weights.safetensors";
constexpr size_t kSize = 200000;

std::string sha(const std::string& s) { return diffuse::sha256_hex(s.data(), s.size()); }

class HubResume : public ::testing::Test {
 protected:
  void SetUp() override {
    FakeHub::Repo repo;
    repo.commit = kCommit;
    repo.files[kWeights] = bytes_ = random_bytes(kSize, 11);
    hub_.add_repo(kRepo, repo);
    sha_ = sha(bytes_);
    cache_ = diffuse::testing::temp_dir();
    opts_.endpoint = hub_.endpoint();
    opts_.cache_dir = cache_;
    opts_.retry_base_delay_ms = 1;
    opts_.progress = [this](const DownloadProgress& p) {
      attempts_seen_ = std::max(attempts_seen_, p.attempt);
      if (!p.note.empty() && (notes_.empty() || notes_.back() != p.note)) notes_.push_back(p.note);
    };
  }

  fs::path blob() const { return fs::path(cache_) / "models--org--flaky" / "blobs" / sha_; }
  fs::path part() const {
    fs::path p = blob();
    p += ".incomplete";
    return p;
  }
  std::string download() { return hub_download(kRepo, kWeights, "main", opts_); }
  // The Range header of every GET of the blob, in order ("" = none).
  std::vector<std::string> ranges() const {
    std::vector<std::string> out;
    for (const auto& r : hub_.requests())
      if (r.method == "GET" && r.target == "/blobs/" + sha_) out.push_back(r.range);
    return out;
  }
  std::string notes() const {
    std::string all;
    for (const auto& n : notes_) all += n + "\n";
    return all;
  }
  void expect_whole_file(const std::string& path) const {
    EXPECT_EQ(path, (fs::path(cache_) / "models--org--flaky" / "snapshots" / kCommit / kWeights).string());
    EXPECT_EQ(diffuse::sha256_file(path), sha_);
    EXPECT_EQ(diffuse::testing::read_file(path), bytes_);
    EXPECT_FALSE(fs::exists(part()));
  }

  FakeHub hub_;
  std::string bytes_, sha_, cache_;
  HubOptions opts_;
  std::vector<std::string> notes_;
  int attempts_seen_ = 0;
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

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_F(HubResume, CutConnectionsAreResumedWithRange) {
  hub_.cut_blob_gets(sha_, 50000, 3);
  expect_whole_file(download());
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", "bytes=50000-", "bytes=100000-", "bytes=150000-"}));
  EXPECT_EQ(attempts_seen_, 4);
  EXPECT_NE(notes().find("resumed at 48.8 KiB (attempt 2/5)"), std::string::npos) << notes();
  EXPECT_NE(notes().find("resumed at 146.5 KiB (attempt 4/5)"), std::string::npos) << notes();
}

TEST_F(HubResume, StalledConnectionCountsAsBroken) {
  FakeHub::BlobFault stall;
  stall.cut_after = 70000;
  stall.stall = true;  // then silence, with the connection open
  hub_.script_blob_gets(sha_, {stall});
  opts_.stall_timeout_ms = 300;
  auto t0 = std::chrono::steady_clock::now();
  expect_whole_file(download());
  double took = seconds_since(t0);
  EXPECT_GE(took, 0.3);
  EXPECT_LT(took, 1.5);  // noticed within ~50 ms of the timeout, not curl's 1 s ticks
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", "bytes=70000-"}));
  EXPECT_NE(notes().find("stalled: no data for 0.3 s"), std::string::npos) << notes();
}

TEST_F(HubResume, StallBeforeTheFirstByteIsRetriedToo) {
  FakeHub::BlobFault stall;
  stall.cut_after = 0;
  stall.stall = true;
  hub_.script_blob_gets(sha_, {stall});
  opts_.stall_timeout_ms = 200;
  auto t0 = std::chrono::steady_clock::now();
  expect_whole_file(download());
  EXPECT_LT(seconds_since(t0), 1.5);
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", ""}));  // nothing to resume from
  EXPECT_NE(notes().find("started again from 0 (attempt 2/5)"), std::string::npos) << notes();
}

TEST_F(HubResume, ServerErrorsAreRetriedWithExponentialBackoff) {
  FakeHub::BlobFault unavailable, busy, cut;
  unavailable.status = 503;
  busy.status = 429;
  cut.cut_after = 1000;
  hub_.script_blob_gets(sha_, {cut, unavailable, busy});
  opts_.retry_base_delay_ms = 40;
  opts_.retry_max_delay_ms = 100;  // 40, 80, then 100 instead of 160
  auto t0 = std::chrono::steady_clock::now();
  expect_whole_file(download());
  EXPECT_GE(seconds_since(t0), 0.22);
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", "bytes=1000-", "bytes=1000-", "bytes=1000-"}));
  EXPECT_NE(notes().find("retrying in 0.04 s (attempt 2/5)"), std::string::npos) << notes();
  EXPECT_NE(notes().find("(HTTP 503); retrying in 0.08 s (attempt 3/5)"), std::string::npos) << notes();
  EXPECT_NE(notes().find("(HTTP 429); retrying in 0.1 s (attempt 4/5)"), std::string::npos) << notes();
}

TEST_F(HubResume, ServerIgnoringRangeRestartsFromZeroCleanly) {
  FakeHub::BlobFault cut, whole;
  cut.cut_after = 90000;
  whole.ignore_range = true;  // 200 with the whole file to "Range: bytes=90000-"
  hub_.script_blob_gets(sha_, {cut, whole});
  expect_whole_file(download());
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", "bytes=90000-"}));
  EXPECT_EQ(fs::file_size(blob()), kSize);  // truncated first, not appended to the 90000 bytes
  EXPECT_NE(notes().find("the server ignored the Range request: started again from 0 (attempt 2/5)"), std::string::npos)
      << notes();
}

TEST_F(HubResume, FileChangedBetweenAttemptsRestarts) {
  FakeHub::BlobFault cut, other_etag, other_size;
  cut.cut_after = 60000;
  other_etag.etag = "not-the-same-object";
  other_size.bytes = random_bytes(150000, 12);  // served with Range: Content-Range .../150000
  hub_.script_blob_gets(sha_, {cut, other_etag, cut, other_size});
  expect_whole_file(download());
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", "bytes=60000-", "", "bytes=60000-", ""}));
  EXPECT_NE(notes().find("restarted from 0: the file changed on the server (ETag not-the-same-object, before " + sha_ +
                         ") (attempt 3/5)"),
            std::string::npos)
      << notes();
  EXPECT_NE(notes().find("restarted from 0: the file on the server is now 150000 bytes, 200000 expected (attempt 5/5)"),
            std::string::npos)
      << notes();
}

TEST_F(HubResume, RangeNotSatisfiableRestarts) {
  fs::create_directories(part().parent_path());
  std::ofstream(part(), std::ios::binary) << bytes_.substr(0, 80000);  // left by an earlier run
  FakeHub::BlobFault refused;
  refused.status = 416;
  hub_.script_blob_gets(sha_, {refused});
  expect_whole_file(download());
  EXPECT_EQ(ranges(), (std::vector<std::string>{"bytes=80000-", ""}));
  EXPECT_NE(notes().find("resumed at 78.1 KiB (partial file from an earlier run)"), std::string::npos) << notes();
  EXPECT_NE(notes().find("restarted from 0: the server cannot resume at byte 80000 (HTTP 416) (attempt 2/5)"),
            std::string::npos)
      << notes();
}

TEST_F(HubResume, PermanentErrorsAreNotRetried) {
  FakeHub::BlobFault forbidden, gone, unauthorized;
  forbidden.status = 403;
  gone.status = 404;
  unauthorized.status = 401;
  hub_.script_blob_gets(sha_, {forbidden, gone, unauthorized});
  std::string msg;
  EXPECT_EQ(code_of([&] { download(); }, &msg), ErrorCode::kInvalidArgument);
  EXPECT_NE(msg.find("gated or private"), std::string::npos) << msg;
  EXPECT_EQ(ranges().size(), 1u);
  EXPECT_EQ(code_of([&] { download(); }, &msg), ErrorCode::kNotFound);
  EXPECT_NE(msg.find("'weights.safetensors' not found"), std::string::npos) << msg;
  EXPECT_EQ(ranges().size(), 2u);
  EXPECT_EQ(code_of([&] { download(); }, &msg), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ranges().size(), 3u);
  EXPECT_TRUE(notes_.empty()) << notes();
  expect_whole_file(download());
}

TEST_F(HubResume, GivingUpSaysHowManyAttemptsAndKeepsThePartial) {
  hub_.cut_blob_gets(sha_, 10000, 10);
  opts_.download_attempts = 3;
  std::string msg;
  EXPECT_EQ(code_of([&] { download(); }, &msg), ErrorCode::kIo);
  EXPECT_NE(msg.find("[hub] download of org/flaky/weights.safetensors gave up after 3 attempts (last: "),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("30000 of 200000 bytes are kept in " + part().string() + ": rerun to resume"), std::string::npos)
      << msg;
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", "bytes=10000-", "bytes=20000-"}));
  ASSERT_TRUE(fs::exists(part()));
  EXPECT_EQ(fs::file_size(part()), 30000u);
  EXPECT_FALSE(fs::exists(blob()));

  opts_.download_attempts = 1;  // one try: no retry at all
  EXPECT_EQ(code_of([&] { download(); }, &msg), ErrorCode::kIo);
  EXPECT_NE(msg.find("gave up after 1 attempt (last: "), std::string::npos) << msg;
  EXPECT_EQ(ranges().size(), 4u);
  EXPECT_EQ(fs::file_size(part()), 40000u);
}

TEST_F(HubResume, ShaMismatchAfterAResumeDeletesThePartial) {
  hub_.cut_blob_gets(sha_, 120000, 1);
  hub_.corrupt_blob(sha_, true);  // byte 100000 of the file, in the first part
  std::string bad = bytes_;
  bad[bad.size() / 2] ^= 0x5a;
  std::string msg;
  EXPECT_EQ(code_of([&] { download(); }, &msg), ErrorCode::kIo);
  EXPECT_NE(msg.find("sha256 mismatch for org/flaky/weights.safetensors: expected " + sha_ + ", got " + sha(bad)),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("the bad file " + part().string() + " was deleted"), std::string::npos) << msg;
  EXPECT_EQ(ranges(), (std::vector<std::string>{"", "bytes=120000-"}));
  EXPECT_FALSE(fs::exists(part()));
  EXPECT_FALSE(fs::exists(blob()));
}

TEST_F(HubResume, CancelDuringTheBackoffKeepsThePartial) {
  hub_.cut_blob_gets(sha_, 80000, 1);
  opts_.retry_base_delay_ms = 5000;
  bool waiting = false;
  auto base_progress = opts_.progress;
  opts_.progress = [&](const DownloadProgress& p) {
    base_progress(p);
    waiting = waiting || p.note.find("retrying in 5 s") != std::string::npos;
  };
  opts_.cancel = [&] { return waiting; };
  auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  EXPECT_EQ(code_of([&] { download(); }, &msg), ErrorCode::kCancelled);
  EXPECT_LT(seconds_since(t0), 1.0);
  EXPECT_NE(msg.find("cancelled after 80000 of 200000 bytes"), std::string::npos) << msg;
  EXPECT_EQ(fs::file_size(part()), 80000u);
  EXPECT_EQ(ranges().size(), 1u);
}

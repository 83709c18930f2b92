#include "hub/hub.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include "core/error.h"
#include "hub/http_client.h"
#include "io/sha256.h"

namespace fs = std::filesystem;

namespace diffuse::hub {
namespace {

struct FileMetadata {
  std::string commit;
  std::string etag;
  uint64_t size = 0;
  bool size_known = false;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string of_size(uint64_t done, const FileMetadata& m) {
  return std::to_string(done) + (m.size_known ? " of " + std::to_string(m.size) : "") + " bytes";
}

// huggingface_hub file_download._normalize_etag: drop the weak marker and quotes.
std::string normalize_etag(std::string etag) {
  if (etag.rfind("W/", 0) == 0) etag = etag.substr(2);
  etag.erase(std::remove(etag.begin(), etag.end(), '"'), etag.end());
  return etag;
}

std::string resolve_url(const HubOptions& o, const std::string& repo, const std::string& revision,
                        const std::string& path) {
  return o.endpoint + "/" + repo + "/resolve/" + url_encode(revision, false) + "/" + url_encode(path, true);
}

[[noreturn]] void throw_http_error(const HttpResponse& r, const HubOptions& o, const std::string& repo,
                                   const std::string& revision, const std::string& path) {
  const std::string code = r.header("x-error-code");
  const std::string where = path.empty() ? "" : " (while fetching '" + path + "')";
  if (code == "RepoNotFound")
    throw_error(ErrorCode::kNotFound, "[hub] repo " + repo + " not found on " + o.endpoint +
                                          (o.token.empty() ? " (if it is private, set HF_TOKEN)" : ""));
  if (code == "RevisionNotFound")
    throw_error(ErrorCode::kNotFound, "[hub] revision '" + revision + "' not found in repo " + repo);
  if (code == "EntryNotFound" || (r.status == 404 && !path.empty()))
    throw_error(ErrorCode::kNotFound,
                "[hub] file '" + path + "' not found in repo " + repo + " at revision '" + revision + "'");
  if (code == "GatedRepo" || r.status == 401 || r.status == 403) {
    std::string page = o.endpoint + "/" + repo;
    if (o.token.empty())
      throw_error(ErrorCode::kInvalidArgument, "[hub] repo " + repo + " is gated or private: accept its licence on " +
                                                   page + " and set HF_TOKEN" + where);
    throw_error(ErrorCode::kInvalidArgument, "[hub] repo " + repo + " is gated or private and the token in use was refused: "
                                             "accept its licence on " + page +
                                                 " with that account, or set HF_TOKEN to a token with read access" + where);
  }
  if (r.status == 404)
    throw_error(ErrorCode::kNotFound, "[hub] repo " + repo + " or revision '" + revision + "' not found on " + o.endpoint);
  std::string msg = r.header("x-error-message");
  throw_error(ErrorCode::kIo, "[hub] " + repo + where + ": HTTP " + std::to_string(r.status) + " from " + o.endpoint +
                                  (msg.empty() ? "" : ": " + msg));
}

// HEAD without following the CDN redirect: the hub puts the metadata on the
// 302 itself. Relative redirects (a renamed repo) are followed, as
// huggingface_hub's _request_wrapper(follow_relative_redirects=True) does.
// nullopt + *net_error when the hub cannot be reached.
std::optional<FileMetadata> fetch_metadata(const std::string& repo, const std::string& path, const std::string& revision,
                                           const HubOptions& o, std::string* net_error) {
  HttpRequest req;
  req.url = resolve_url(o, repo, revision, path);
  req.head = true;
  req.follow_redirects = false;
  req.token = o.token;
  req.cancel = o.cancel;
  HttpResponse r;
  for (int hop = 0; hop < 5; ++hop) {
    r = http_request(req);
    if (r.cancelled) throw_error(ErrorCode::kCancelled, "[hub] cancelled while fetching " + repo + "/" + path);
    if (r.transport_error) {
      *net_error = r.transport_message;
      return std::nullopt;
    }
    std::string location = r.header("location");
    if (r.status >= 300 && r.status < 400 && !location.empty() && location.front() == '/') {
      req.url = url_origin(req.url) + location;
      continue;
    }
    break;
  }
  if (r.status < 200 || r.status >= 400) throw_http_error(r, o, repo, revision, path);
  FileMetadata m;
  m.commit = r.header("x-repo-commit");
  m.etag = normalize_etag(!r.header("x-linked-etag").empty() ? r.header("x-linked-etag") : r.header("etag"));
  std::string size = !r.header("x-linked-size").empty() ? r.header("x-linked-size") : r.header("content-length");
  if (!size.empty()) {
    m.size = std::strtoull(size.c_str(), nullptr, 10);
    m.size_known = true;
  }
  if (!is_commit_hash(m.commit) || m.etag.empty())
    throw_error(ErrorCode::kIo, "[hub] " + req.url + " answered without X-Repo-Commit/ETag: is " + o.endpoint +
                                    " a Hugging Face hub (or a proxy that strips headers)?");
  bool safe = std::all_of(m.etag.begin(), m.etag.end(), [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; });
  if (!safe) throw_error(ErrorCode::kIo, "[hub] " + req.url + " sent an unusable ETag '" + m.etag + "'");
  return m;
}

// An exclusive flock on <cache>/.locks/<repo folder>/<etag>.lock, so two
// processes pulling the same model do not write the same partial file.
class BlobLock {
 public:
  explicit BlobLock(const fs::path& path) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);  // best effort: a read-only .locks only loses the guard
  }
  ~BlobLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  BlobLock(const BlobLock&) = delete;
  BlobLock& operator=(const BlobLock&) = delete;

 private:
  int fd_ = -1;
};

void hash_prefix(const fs::path& file, uint64_t bytes, Sha256* hasher) {
  std::ifstream f(file, std::ios::binary);
  std::vector<char> buf(1 << 20);
  while (bytes > 0 && f) {
    f.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(bytes, buf.size())));
    std::streamsize got = f.gcount();
    if (got <= 0) break;
    hasher->update(buf.data(), static_cast<size_t>(got));
    bytes -= static_cast<uint64_t>(got);
  }
  if (bytes != 0) throw_error(ErrorCode::kIo, "[hub] cannot read the partial download " + file.string());
}

void check_free_space(const fs::path& dir, uint64_t needed, const std::string& what) {
  struct statvfs st{};
  if (needed == 0 || ::statvfs(dir.c_str(), &st) != 0) return;
  uint64_t available = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  if (available < needed)
    throw_error(ErrorCode::kIo, "[hub] disk full: " + what + " needs " + gib(needed) + " more but only " + gib(available) +
                                    " is free in " + dir.string());
}

struct Throttle {
  std::chrono::steady_clock::time_point last{};
  bool due() {
    auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(100)) return false;
    last = now;
    return true;
  }
};

// "812 B", "78.1 KiB", "80.0 MiB", "1.20 GiB": for progress notes.
std::string human_bytes(uint64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes < 1024) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else if (bytes < (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else if (bytes < (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024.0));
  else return gib(bytes);
  return buf;
}

// Statuses that mean "not now" rather than "no": server errors, 429 Too Many
// Requests, 408 Request Timeout.
bool is_transient_status(long status) { return status >= 500 || status == 429 || status == 408; }

// "bytes 80000-199999/200000" -> first = 80000, total = 200000 (0 for "/*").
bool parse_content_range(const std::string& value, uint64_t* first, uint64_t* total) {
  unsigned long long a = 0, b = 0;
  char tail[32] = {};
  if (std::sscanf(value.c_str(), "bytes %llu-%llu/%31s", &a, &b, tail) != 3 || b < a) return false;
  *first = a;
  *total = tail[0] == '*' ? 0 : std::strtoull(tail, nullptr, 10);
  return true;
}

// One file's transfer into blobs/<etag>.incomplete. Each try appends to what
// the previous one (or an earlier run) left, until the file is whole or the
// tries run out (HubOptions::download_attempts); then the sha256 of the whole
// file is checked and it is renamed into place. The port of huggingface_hub
// file_download.http_get's "Trying to resume download..." loop, plus the
// checks that make appending safe: the answer must be a 206 starting at our
// byte, of the same size and ETag as before.
class BlobDownload {
 public:
  BlobDownload(const std::string& repo, const std::string& path, const std::string& revision, const FileMetadata& meta,
               const fs::path& blob, const HubOptions& o)
      : repo_(repo), path_(path), revision_(revision), meta_(meta), blob_(blob), o_(o), what_(repo + "/" + path),
        verify_(is_sha256(meta.etag)), attempts_(std::max(1, o.download_attempts)) {
    part_ = blob;
    part_ += ".incomplete";
    progress_.repo = repo;
    progress_.path = path;
    progress_.total = meta.size_known ? meta.size : 0;
  }

  void run() {
    std::error_code ec;
    written_ = fs::is_regular_file(part_, ec) ? fs::file_size(part_, ec) : 0;
    if (meta_.size_known && written_ > meta_.size) restart();  // not ours to resume
    if (verify_ && written_ > 0) hash_prefix(part_, written_, &hasher_);
    if (written_ > 0) progress_.note = "resumed at " + human_bytes(written_) + " (partial file from an earlier run)";

    bool complete = meta_.size_known && written_ == meta_.size;
    std::string failure;
    int attempt = 1;
    while (!complete) {
      report(false);
      Try t = transfer();
      if (t.kind == Try::kComplete) {
        complete = true;
        break;
      }
      failure = t.why;
      if (t.kind == Try::kRestart) restart();  // what is on disk cannot be continued
      if (attempt == attempts_) break;
      ++attempt;
      progress_.attempt = attempt;
      const std::string of = "(attempt " + std::to_string(attempt) + "/" + std::to_string(attempts_) + ")";
      if (t.kind == Try::kRestart) {
        progress_.note = "restarted from 0: " + t.why + " " + of;
        continue;  // not the network's fault: no reason to wait
      }
      const long delay_ms = retry_delay_ms(attempt);
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%g s", static_cast<double>(delay_ms) / 1000.0);
      progress_.note = "interrupted at " + human_bytes(written_) + " (" + t.why + "); retrying in " + seconds + " " + of;
      report(false);
      sleep_unless_cancelled(delay_ms);
      progress_.note = (written_ > 0 ? "resumed at " + human_bytes(written_) : std::string("started again from 0")) + " " + of;
    }
    if (!complete)
      throw_error(ErrorCode::kIo, "[hub] download of " + what_ + " gave up after " + std::to_string(attempts_) +
                                      (attempts_ == 1 ? " attempt" : " attempts") + " (last: " + failure + "); " +
                                      of_size(written_, meta_) + " are kept in " + part_.string() +
                                      ": rerun to resume");
    if (verify_) {
      std::string digest = hasher_.hex_digest();
      if (digest != lower(meta_.etag)) {
        fs::remove(part_, ec);
        throw_error(ErrorCode::kIo, "[hub] sha256 mismatch for " + what_ + ": expected " + lower(meta_.etag) + ", got " +
                                        digest + " (corrupted download); the bad file " + part_.string() +
                                        " was deleted, rerun to fetch it again");
      }
    }
    fs::rename(part_, blob_, ec);
    if (ec) throw_error(ErrorCode::kIo, "[hub] cannot move " + part_.string() + " into place: " + ec.message());
    report(true);
  }

 private:
  struct Try {
    enum Kind { kComplete, kRetry, kRestart } kind;
    std::string why;  // for kRetry and kRestart
  };

  // One GET from written_ on, appended to the partial file.
  Try transfer() {
    check_free_space(part_.parent_path(), meta_.size_known ? meta_.size - written_ : 0, what_);
    FILE* f = std::fopen(part_.c_str(), "ab");
    if (!f) throw_error(ErrorCode::kIo, "[hub] cannot open " + part_.string() + " for writing: " + std::strerror(errno));
    std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
    const uint64_t offset = written_;
    int write_errno = 0;
    bool started = false;
    std::string mismatch;  // why this answer's body cannot continue the partial file
    Throttle throttle;
    HttpRequest req;
    req.url = resolve_url(o_, repo_, revision_, path_);
    req.token = o_.token;
    req.range_start = offset;
    req.cancel = o_.cancel;
    req.stall_timeout_ms = std::max(1, o_.stall_timeout_ms);
    HttpResponse r = http_request(req, [&](const HttpResponse& head, const char* data, size_t n) {
      if (!started) {
        started = true;
        mismatch = check_answer(head, offset);
        if (!mismatch.empty()) return false;
        if (head.status != 206 && written_ > 0) {  // the server ignored Range: the body is the whole file
          std::fflush(f);
          if (::ftruncate(::fileno(f), 0) != 0) {
            write_errno = errno;
            return false;
          }
          written_ = 0;
          hasher_ = Sha256();
          progress_.note = "the server ignored the Range request: started again from 0 (attempt " +
                           std::to_string(progress_.attempt) + "/" + std::to_string(attempts_) + ")";
        }
      }
      if (std::fwrite(data, 1, n, f) != n) {
        write_errno = errno;
        return false;
      }
      if (verify_) hasher_.update(data, n);
      written_ += n;
      if (throttle.due()) report(false);
      return true;
    });
    if (std::fflush(f) != 0 && write_errno == 0) write_errno = errno;
    if (write_errno == 0 && ::fsync(::fileno(f)) != 0 && errno != EINVAL) write_errno = errno;
    if (std::fclose(f) != 0 && write_errno == 0) write_errno = errno;

    if (write_errno == ENOSPC || write_errno == EDQUOT)
      throw_error(ErrorCode::kIo, "[hub] disk full while writing " + part_.string() + " (" + of_size(written_, meta_) +
                                      " of " + what_ + "); free some space and rerun to resume");
    if (write_errno != 0)
      throw_error(ErrorCode::kIo, "[hub] cannot write " + part_.string() + ": " + std::strerror(write_errno) +
                                      "; rerun to resume");
    if (r.cancelled) throw_cancelled();
    if (!mismatch.empty()) return {Try::kRestart, mismatch};
    if (r.status == 416 && offset > 0)
      return {Try::kRestart, "the server cannot resume at byte " + std::to_string(offset) + " (HTTP 416)"};
    if (r.status != 0 && (r.status < 200 || r.status >= 300)) {
      if (is_transient_status(r.status)) return {Try::kRetry, "HTTP " + std::to_string(r.status)};
      throw_http_error(r, o_, repo_, revision_, path_);  // 401/403/404: asking again changes nothing
    }
    if (r.transport_error) {
      if (r.transport_transient) return {Try::kRetry, r.transport_message};
      throw_error(ErrorCode::kIo, "[hub] download of " + what_ + " failed after " + of_size(written_, meta_) + " (" +
                                      r.transport_message + "); the partial file is kept at " + part_.string() +
                                      ": rerun to resume");
    }
    if (meta_.size_known && written_ < meta_.size) return {Try::kRetry, "the server closed the stream early"};
    if (meta_.size_known && written_ > meta_.size)
      return {Try::kRestart, "got " + std::to_string(written_) + " bytes, " + std::to_string(meta_.size) + " expected"};
    return {Try::kComplete, ""};
  }

  // "" when the body of `head` continues the partial file of `offset` bytes,
  // else why not. A 200 is the whole file (the caller starts over with it);
  // a 206 must start at our byte and be of the file seen before: its total
  // size and, once an earlier answer of this call gave one, its ETag.
  std::string check_answer(const HttpResponse& head, uint64_t offset) {
    const std::string etag = normalize_etag(head.header("etag"));
    if (head.status != 206) {
      etag_seen_ = etag;
      return "";
    }
    if (!etag_seen_.empty() && !etag.empty() && etag != etag_seen_)
      return "the file changed on the server (ETag " + etag + ", before " + etag_seen_ + ")";
    if (etag_seen_.empty()) etag_seen_ = etag;
    const std::string range = head.header("content-range");
    uint64_t first = 0, total = 0;
    if (!parse_content_range(range, &first, &total)) return "unreadable Content-Range '" + range + "'";
    if (first != offset)
      return "asked for bytes from " + std::to_string(offset) + ", got them from " + std::to_string(first);
    if (total != 0 && meta_.size_known && total != meta_.size)
      return "the file on the server is now " + std::to_string(total) + " bytes, " + std::to_string(meta_.size) +
             " expected";
    return "";
  }

  void restart() {
    std::error_code ec;
    if (fs::exists(part_, ec)) {
      fs::resize_file(part_, 0, ec);
      if (ec) throw_error(ErrorCode::kIo, "[hub] cannot truncate " + part_.string() + ": " + ec.message());
    }
    written_ = 0;
    hasher_ = Sha256();
  }

  // Before try `attempt` (2, 3, ...): base, 2 base, 4 base, ... at most the cap.
  long retry_delay_ms(int attempt) const {
    const long base = std::max(0, o_.retry_base_delay_ms);
    const long cap = std::max(base, static_cast<long>(o_.retry_max_delay_ms));
    const int doublings = std::min(attempt - 2, 30);
    return std::min(cap, base << doublings);
  }

  void sleep_unless_cancelled(long ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      if (o_.cancel && o_.cancel()) throw_cancelled();
      auto left = until - std::chrono::steady_clock::now();
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(20)));
    }
  }

  [[noreturn]] void throw_cancelled() const {
    throw_error(ErrorCode::kCancelled, "[hub] download of " + what_ + " cancelled after " + of_size(written_, meta_) +
                                           "; the partial file " + part_.string() + " is kept, rerun to resume");
  }

  void report(bool done) {
    if (!o_.progress) return;
    progress_.downloaded = written_;
    progress_.done = done;
    o_.progress(progress_);
  }

  const std::string repo_, path_, revision_;
  const FileMetadata& meta_;
  const fs::path blob_;
  fs::path part_;
  const HubOptions& o_;
  const std::string what_;
  const bool verify_;      // LFS files: their ETag is the sha256 of the content
  const int attempts_;
  uint64_t written_ = 0;   // bytes in part_, all of them hashed into hasher_
  Sha256 hasher_;
  std::string etag_seen_;  // the ETag of this call's last full answer or first 206
  DownloadProgress progress_;
};

// Streams the file into blobs/<etag>.incomplete (resuming it), verifies it and
// renames it to blobs/<etag>.
void download_blob(const std::string& repo, const std::string& path, const std::string& revision,
                   const FileMetadata& meta, const fs::path& blob, const HubOptions& o) {
  std::error_code ec;
  fs::create_directories(blob.parent_path(), ec);
  if (ec) throw_error(ErrorCode::kIo, "[hub] cannot create " + blob.parent_path().string() + ": " + ec.message());
  BlobLock lock(fs::path(o.cache_dir) / ".locks" / repo_folder_name(repo) / (meta.etag + ".lock"));
  if (fs::exists(blob, ec)) return;  // another process finished it while we waited
  BlobDownload(repo, path, revision, meta, blob, o).run();
}

bool is_shard_index(const std::string& file) {
  return file.size() > 5 && file.compare(file.size() - 5, 5, ".json") == 0 && file.find(".index") != std::string::npos &&
         (file.find(".safetensors.index") != std::string::npos || file.find(".bin.index") != std::string::npos);
}

nlohmann::json read_json(const std::string& file) {
  std::ifstream f(file);
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kIo, "[hub] " + file + " is not valid JSON: " + e.what());
  }
}

std::string dirname_of(const std::string& p) {
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? "" : p.substr(0, slash + 1);
}

}  // namespace

std::string hub_download(const std::string& repo, const std::string& path, const std::string& revision_in,
                         const HubOptions& o) {
  validate_repo_id(repo);
  validate_repo_path(path);
  DIFFUSE_CHECK_ARG(!o.cache_dir.empty(), "[hub] no cache folder set (HF_HUB_CACHE / HF_HOME)");
  const std::string revision = revision_in.empty() ? "main" : revision_in;
  const fs::path storage = repo_storage(o.cache_dir, repo);

  if (is_commit_hash(revision))
    if (auto p = snapshot_file(storage, revision, path)) return *p;  // immutable: no request needed
  if (o.offline) {
    if (auto p = cached_file(o.cache_dir, repo, revision, path)) return *p;
    throw_error(ErrorCode::kNotFound, "[hub] HF_HUB_OFFLINE is set and " + repo + "/" + path + " (revision '" + revision +
                                          "') is not in the cache " + o.cache_dir);
  }
  std::string net_error;
  std::optional<FileMetadata> meta = fetch_metadata(repo, path, revision, o, &net_error);
  if (!meta) {
    if (auto p = cached_file(o.cache_dir, repo, revision, path)) return *p;  // offline but cached
    throw_error(ErrorCode::kIo, "[hub] cannot reach " + o.endpoint + " to fetch " + repo + "/" + path + ": " + net_error);
  }
  if (!is_commit_hash(revision) && revision != meta->commit) write_ref(storage, revision, meta->commit);

  const fs::path blob = storage / "blobs" / meta->etag;
  std::error_code ec;
  if (!fs::exists(blob, ec)) download_blob(repo, path, revision, *meta, blob, o);
  if (auto p = snapshot_file(storage, meta->commit, path)) {
    // An existing regular file or a link to this very blob is already right.
    fs::path pointer = *p;
    if (!fs::is_symlink(pointer, ec) || fs::equivalent(pointer, blob, ec)) return *p;
  }
  return link_snapshot_file(storage, meta->commit, path, meta->etag);
}

RepoInfo model_info(const std::string& repo, const std::string& revision_in, const HubOptions& o) {
  validate_repo_id(repo);
  const std::string revision = revision_in.empty() ? "main" : revision_in;
  HttpRequest req;
  req.url = o.endpoint + "/api/models/" + repo + "/revision/" + url_encode(revision, false);
  req.token = o.token;
  req.cancel = o.cancel;
  HttpResponse r = http_request(req);
  if (r.cancelled) throw_error(ErrorCode::kCancelled, "[hub] cancelled while asking for " + repo);
  if (r.transport_error)
    throw_error(ErrorCode::kIo, "[hub] cannot reach " + o.endpoint + " to list " + repo + ": " + r.transport_message);
  if (!r.ok()) throw_http_error(r, o, repo, revision, "");
  RepoInfo info;
  try {
    nlohmann::json j = nlohmann::json::parse(r.body);
    info.id = j.value("id", repo);
    info.sha = j.value("sha", "");
    if (j.contains("siblings") && j["siblings"].is_array())
      for (const auto& s : j["siblings"])
        if (s.contains("rfilename")) info.files.push_back(s["rfilename"].get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kIo, "[hub] unexpected answer from " + req.url + ": " + e.what());
  }
  if (!is_commit_hash(info.sha)) throw_error(ErrorCode::kIo, "[hub] " + req.url + " did not give a commit sha");
  return info;
}

std::vector<std::string> plan_pipeline_files(const nlohmann::json& model_index, const std::vector<std::string>& repo_files,
                                             const std::string& variant) {
  const std::set<std::string> files(repo_files.begin(), repo_files.end());
  // Components Diffuse never runs (DiffusionPipeline would load them).
  static const std::set<std::string> kSkipped = {"safety_checker", "feature_extractor", "image_encoder"};
  std::vector<std::string> plan;
  auto require = [&](const std::string& file, const std::string& component) {
    if (!files.count(file))
      throw_error(ErrorCode::kNotFound, "[hub] component '" + component + "' lacks " + file + " in the repo");
    plan.push_back(file);
  };
  for (const auto& [name, value] : model_index.items()) {
    if (name.empty() || name[0] == '_' || kSkipped.count(name)) continue;
    if (!value.is_array() || value.size() != 2 || !value[0].is_string() || !value[1].is_string()) continue;
    const std::string cls = value[1].get<std::string>();
    const std::string dir = name + "/";
    if (cls.find("Tokenizer") != std::string::npos) {
      require(dir + "vocab.json", name);
      require(dir + "merges.txt", name);
      for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"})
        if (files.count(dir + f)) plan.push_back(dir + f);
      continue;
    }
    if (cls.find("Scheduler") != std::string::npos) {
      require(dir + "scheduler_config.json", name);
      continue;
    }
    require(dir + "config.json", name);
    std::vector<std::string> variants;
    if (!variant.empty()) variants.push_back("." + variant);
    variants.push_back("");
    std::string chosen;
    for (const char* ext : {"safetensors", "bin"}) {
      for (const std::string& v : variants) {
        for (const char* stem : {"diffusion_pytorch_model", "model", "pytorch_model"}) {
          std::string single = dir + stem + v + "." + ext;
          std::string index = dir + stem + "." + ext + ".index" + v + ".json";  // diffusers' variant index naming
          if (files.count(single)) chosen = single;
          else if (files.count(index)) chosen = index;
          if (!chosen.empty()) break;
        }
        if (!chosen.empty()) break;
      }
      if (!chosen.empty()) break;
    }
    if (chosen.empty())
      throw_error(ErrorCode::kNotFound, "[hub] component '" + name + "' has no weights (looked for " + dir +
                                            "{diffusion_pytorch_model,model,pytorch_model}" +
                                            (variant.empty() ? "" : "[." + variant + "]") + ".{safetensors,bin})");
    plan.push_back(chosen);
  }
  return plan;
}

std::string pull_pipeline(const std::string& repo_or_alias, const PullOptions& pull, const HubOptions& o) {
  const std::string repo = resolve_repo(repo_or_alias);
  validate_repo_id(repo);
  const std::string revision = pull.revision.empty() ? "main" : pull.revision;
  const fs::path storage = repo_storage(o.cache_dir, repo);

  if (o.offline) {
    std::optional<std::string> commit = is_commit_hash(revision) ? std::optional<std::string>(revision)
                                                                  : read_ref(storage, revision);
    std::string want = pull.single_file.empty() ? "model_index.json" : pull.single_file;
    std::optional<std::string> p = commit ? snapshot_file(storage, *commit, want) : std::nullopt;
    if (!p)
      throw_error(ErrorCode::kNotFound, "[hub] HF_HUB_OFFLINE is set and " + repo + " (revision '" + revision +
                                            "') is not in the cache " + o.cache_dir);
    return pull.single_file.empty() ? (storage / "snapshots" / *commit).string() : *p;
  }

  // Pin every file to the commit the revision names now, so a push during a
  // long pull cannot mix two versions.
  RepoInfo info = model_info(repo, revision, o);
  const std::set<std::string> files(info.files.begin(), info.files.end());
  auto finish = [&] {
    if (revision != info.sha) write_ref(storage, revision, info.sha);
  };

  if (!pull.single_file.empty()) {
    if (!files.count(pull.single_file)) {
      std::string listed;
      for (const auto& f : info.files)
        if (f.find('/') == std::string::npos && (f.ends_with(".safetensors") || f.ends_with(".ckpt"))) listed += " " + f;
      throw_error(ErrorCode::kNotFound, "[hub] repo " + repo + " has no file '" + pull.single_file + "'" +
                                            (listed.empty() ? "" : "; its checkpoints:" + listed));
    }
    std::string p = hub_download(repo, pull.single_file, info.sha, o);
    finish();
    return p;
  }
  if (!files.count("model_index.json")) {
    std::string listed;
    for (const auto& f : info.files)
      if (f.find('/') == std::string::npos && (f.ends_with(".safetensors") || f.ends_with(".ckpt"))) listed += " " + f;
    throw_error(ErrorCode::kInvalidArgument,
                "[hub] repo " + repo + " has no model_index.json, so it is not a diffusers pipeline" +
                    (listed.empty() ? std::string() : "; pull one of its checkpoints as a single file:" + listed));
  }
  nlohmann::json index = read_json(hub_download(repo, "model_index.json", info.sha, o));
  for (const std::string& file : plan_pipeline_files(index, info.files, pull.variant)) {
    std::string local = hub_download(repo, file, info.sha, o);
    if (!is_shard_index(file)) continue;
    nlohmann::json shard_index = read_json(local);
    std::set<std::string> shards;
    if (shard_index.contains("weight_map"))
      for (const auto& [tensor, shard] : shard_index["weight_map"].items()) shards.insert(shard.get<std::string>());
    if (shards.empty()) throw_error(ErrorCode::kIo, "[hub] " + file + " lists no shards in its weight_map");
    for (const std::string& shard : shards) hub_download(repo, dirname_of(file) + shard, info.sha, o);
  }
  finish();
  return (storage / "snapshots" / info.sha).string();
}

}  // namespace diffuse::hub

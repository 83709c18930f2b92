// A small Hugging Face hub for tests: a real HTTP/1.1 server on 127.0.0.1
// (POSIX sockets, one connection at a time, "Connection: close") that
// answers the requests hub_download and pull_pipeline make, the way
// huggingface.co does:
//   GET  /api/models/{repo}/revision/{rev}     {"id", "sha", "siblings":[{"rfilename"}]}
//   HEAD|GET /{repo}/resolve/{rev}/{path}      X-Repo-Commit, ETag; LFS files (>= lfs_threshold
//                                              bytes) answer 302 -> /blobs/{sha256} with
//                                              X-Linked-Etag and X-Linked-Size
//   GET  /blobs/{sha256}                        the bytes with ETag "{sha256}", honouring
//                                              "Range: bytes=N-" (206 + Content-Range)
//   401 + X-Error-Code GatedRepo for a gated repo without the right bearer token,
//   401 RepoNotFound, 404 RevisionNotFound / EntryNotFound.
// Faults, scripted per GET of a blob: cut the connection after N body bytes
// (Content-Length promised them all), go silent after N bytes, answer an
// error status, ignore Range, send another ETag or other bytes; or serve a
// blob with one byte flipped. Every request is logged.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace diffuse::testing {

// n pseudo-random bytes from `seed` (file contents the fake hub serves).
std::string random_bytes(size_t n, uint32_t seed);

class FakeHub {
 public:
  struct Repo {
    std::string commit;                          // 40 hex
    std::string required_token;                  // non-empty: gated
    std::map<std::string, std::string> files;    // path -> bytes
  };
  struct Request {
    std::string method;
    std::string target;         // decoded path
    std::string range;          // Range header, "" when absent
    std::string authorization;  // Authorization header
  };

  FakeHub();   // listens on 127.0.0.1, an ephemeral port
  ~FakeHub();
  FakeHub(const FakeHub&) = delete;
  FakeHub& operator=(const FakeHub&) = delete;

  std::string endpoint() const;  // "http://127.0.0.1:PORT"
  void add_repo(const std::string& id, Repo repo);
  // Every regular file under `dir`, keyed by its relative path.
  static std::map<std::string, std::string> read_tree(const std::string& dir);

  // What one GET of a blob does instead of a plain answer.
  struct BlobFault {
    static constexpr size_t kAll = static_cast<size_t>(-1);
    size_t cut_after = kAll;    // send this many body bytes of the full Content-Length, then
    bool stall = false;         //   close (false) or go silent until the client hangs up (true)
    int status = 0;             // non-zero: answer this HTTP status, no file
    bool ignore_range = false;  // answer 200 with the whole file even to "Range: bytes=N-"
    std::string etag;           // non-empty: this ETag instead of the blob's sha256
    std::string bytes;          // non-empty: serve these bytes instead (the file changed)
  };
  // The next GETs of blob `sha256` follow `faults`, one entry per GET in
  // order; the GETs after them are answered normally.
  void script_blob_gets(const std::string& sha256, std::vector<BlobFault> faults);
  // The next `times` GETs of blob `sha256` each send `after_bytes` body bytes
  // (counted from where the request's Range starts), then close.
  void cut_blob_gets(const std::string& sha256, size_t after_bytes, int times = 1);
  // Blob `sha256` is served with one byte changed, until cleared.
  void corrupt_blob(const std::string& sha256, bool on);

  std::vector<Request> requests() const;
  // Requests whose method matches and whose target contains `needle`.
  int count(const std::string& method, const std::string& needle = "") const;
  void clear_requests();

  size_t lfs_threshold = 1024;

 private:
  struct Reply;
  void serve();
  void handle(int fd);
  Reply route(const Request& req);
  const std::string* find_blob(const std::string& sha) const;

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<std::string, Repo> repos_;
  std::map<std::string, std::string> blobs_;  // sha256 -> bytes
  std::map<std::string, std::deque<BlobFault>> faults_;
  std::map<std::string, bool> corrupt_;
  std::vector<Request> log_;
};

}  // namespace diffuse::testing

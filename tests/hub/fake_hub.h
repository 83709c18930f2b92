// A small Hugging Face hub for tests: a real HTTP/1.1 server on 127.0.0.1
// (POSIX sockets, one connection at a time, "Connection: close") that
// answers the requests hub_download and pull_pipeline make, the way
// huggingface.co does:
//   GET  /api/models/{repo}/revision/{rev}     {"id", "sha", "siblings":[{"rfilename"}]}
//   HEAD|GET /{repo}/resolve/{rev}/{path}      X-Repo-Commit, ETag; LFS files (>= lfs_threshold
//                                              bytes) answer 302 -> /blobs/{sha256} with
//                                              X-Linked-Etag and X-Linked-Size
//   GET  /blobs/{sha256}                        the bytes, honouring "Range: bytes=N-"
//   401 + X-Error-Code GatedRepo for a gated repo without the right bearer token,
//   401 RepoNotFound, 404 RevisionNotFound / EntryNotFound.
// Faults: drop a blob's connection after N bytes (Content-Length promised the
// whole), or serve a blob with one byte flipped. Every request is logged.
#pragma once
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace diffuse::testing {

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

  // The next GET of blob `sha256` sends the full Content-Length but only
  // `after_bytes` bytes of body, then closes the connection. One shot.
  void drop_next_blob_get(const std::string& sha256, size_t after_bytes);
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
  std::map<std::string, size_t> drops_;
  std::map<std::string, bool> corrupt_;
  std::vector<Request> log_;
};

}  // namespace diffuse::testing

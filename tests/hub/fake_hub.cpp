// See fake_hub.h. Built into the hub test executables by #include, because
// CMakeLists.txt compiles only tests/<layer>/test_*.cpp (+ test_util.cpp).
#include "hub/fake_hub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "io/sha256.h"

namespace diffuse::testing {
namespace {

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool send_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t k = ::send(fd, data, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    data += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

std::string quote(const std::string& s) { return "\"" + s + "\""; }

}  // namespace

struct FakeHub::Reply {
  int status = 200;
  std::string reason = "OK";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  size_t drop_after = std::string::npos;  // send only this many body bytes, then close
  bool stall = false;                     // ... or, after them, wait silently for the client to hang up

  static Reply error(int status, const std::string& reason, const std::string& code) {
    Reply r;
    r.status = status;
    r.reason = reason;
    r.headers.emplace_back("X-Error-Code", code);
    r.body = "{\"error\":\"" + code + "\"}";
    return r;
  }
};

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

FakeHub::FakeHub() {
  // Clients must reach this loopback server directly, never through a proxy.
  setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  setenv("no_proxy", "127.0.0.1,localhost", 1);
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error("fake hub: socket() failed");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // loopback only
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(listen_fd_, 16) != 0)
    throw std::runtime_error("fake hub: cannot listen on 127.0.0.1");
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

FakeHub::~FakeHub() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::string FakeHub::endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

void FakeHub::add_repo(const std::string& id, Repo repo) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [path, bytes] : repo.files) blobs_[sha256_hex(bytes.data(), bytes.size())] = bytes;
  repos_[id] = std::move(repo);
}

std::map<std::string, std::string> FakeHub::read_tree(const std::string& dir) {
  namespace fs = std::filesystem;
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    files[fs::relative(e.path(), dir).generic_string()] = ss.str();
  }
  return files;
}

void FakeHub::script_blob_gets(const std::string& sha256, std::vector<BlobFault> faults) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& queue = faults_[sha256];
  for (auto& f : faults) queue.push_back(std::move(f));
}

void FakeHub::cut_blob_gets(const std::string& sha256, size_t after_bytes, int times) {
  BlobFault cut;
  cut.cut_after = after_bytes;
  script_blob_gets(sha256, std::vector<BlobFault>(static_cast<size_t>(std::max(times, 0)), cut));
}

void FakeHub::corrupt_blob(const std::string& sha256, bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  corrupt_[sha256] = on;
}

std::vector<FakeHub::Request> FakeHub::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

int FakeHub::count(const std::string& method, const std::string& needle) const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(std::count_if(log_.begin(), log_.end(), [&](const Request& r) {
    return r.method == method && r.target.find(needle) != std::string::npos;
  }));
}

void FakeHub::clear_requests() {
  std::lock_guard<std::mutex> lock(mu_);
  log_.clear();
}

const std::string* FakeHub::find_blob(const std::string& sha) const {
  auto it = blobs_.find(sha);
  return it == blobs_.end() ? nullptr : &it->second;
}

void FakeHub::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    handle(fd);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
  }
}

void FakeHub::handle(int fd) {
  std::string head;
  char buf[4096];
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return;
    ssize_t k = ::recv(fd, buf, sizeof(buf), 0);
    if (k <= 0) return;
    head.append(buf, static_cast<size_t>(k));
  }
  std::istringstream ss(head);
  std::string line;
  std::getline(ss, line);
  Request req;
  std::string raw_target, version;
  std::istringstream(line) >> req.method >> raw_target >> version;
  while (std::getline(ss, line) && line != "\r") {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(std::min(line.size(), colon + 2));
    if (name == "range") req.range = value;
    if (name == "authorization") req.authorization = value;
  }
  req.target = raw_target;  // routed raw (a revision may hold %2F); logged decoded below
  Reply reply = route(req);
  {
    std::lock_guard<std::mutex> lock(mu_);
    Request logged = req;
    logged.target = percent_decode(raw_target);
    log_.push_back(logged);
  }
  std::ostringstream out;
  out << "HTTP/1.1 " << reply.status << " " << reply.reason << "\r\n";
  for (const auto& [k, v] : reply.headers) out << k << ": " << v << "\r\n";
  out << "Content-Length: " << reply.body.size() << "\r\nConnection: close\r\n\r\n";
  std::string header = out.str();
  if (!send_all(fd, header.data(), header.size())) return;
  if (req.method == "HEAD") return;
  size_t n = std::min(reply.body.size(), reply.drop_after);
  if (!send_all(fd, reply.body.data(), n) || !reply.stall) return;
  // A stalled link: the connection stays open and silent until the client
  // gives up and closes it (recv sees EOF), or 10 s pass.
  for (int waited_ms = 0; waited_ms < 10000 && !stop_; waited_ms += 20) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) != 0 && ::recv(fd, buf, sizeof(buf), 0) <= 0) return;
  }
}

FakeHub::Reply FakeHub::route(const Request& req) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& t = req.target;
  if (req.method != "GET" && req.method != "HEAD") return Reply::error(405, "Method Not Allowed", "BadMethod");

  if (t.rfind("/blobs/", 0) == 0) {
    std::string sha = t.substr(7);
    const std::string* found = find_blob(sha);
    if (!found) return Reply::error(404, "Not Found", "EntryNotFound");
    BlobFault fault;
    auto queued = faults_.find(sha);
    if (req.method == "GET" && queued != faults_.end() && !queued->second.empty()) {
      fault = queued->second.front();
      queued->second.pop_front();
    }
    if (fault.status != 0) return Reply::error(fault.status, "Scripted Failure", "ScriptedFailure");
    std::string bytes = fault.bytes.empty() ? *found : fault.bytes;
    if (corrupt_[sha] && !bytes.empty()) bytes[bytes.size() / 2] ^= 0x5a;
    size_t start = 0;
    Reply r;
    r.headers.emplace_back("ETag", quote(fault.etag.empty() ? sha : fault.etag));
    r.drop_after = fault.cut_after;
    r.stall = fault.stall;
    if (req.range.rfind("bytes=", 0) == 0 && !fault.ignore_range) {
      start = std::stoull(req.range.substr(6));
      if (start >= bytes.size()) {
        Reply e = Reply::error(416, "Range Not Satisfiable", "RangeNotSatisfiable");
        e.headers.emplace_back("Content-Range", "bytes */" + std::to_string(bytes.size()));
        return e;
      }
      r.status = 206;
      r.reason = "Partial Content";
      r.headers.emplace_back("Content-Range", "bytes " + std::to_string(start) + "-" +
                                                  std::to_string(bytes.size() - 1) + "/" + std::to_string(bytes.size()));
    }
    r.headers.emplace_back("Accept-Ranges", "bytes");
    r.body = bytes.substr(start);
    return r;
  }

  bool api = t.rfind("/api/models/", 0) == 0;
  size_t mark = api ? t.find("/revision/") : t.find("/resolve/");
  if (mark == std::string::npos) return Reply::error(404, "Not Found", "NotFound");
  std::string repo_id = api ? t.substr(12, mark - 12) : t.substr(1, mark - 1);
  std::string rest = t.substr(mark + (api ? 10 : 9));
  size_t slash = rest.find('/');
  std::string revision = percent_decode(api ? rest : rest.substr(0, slash));
  std::string path = api || slash == std::string::npos ? "" : percent_decode(rest.substr(slash + 1));

  auto it = repos_.find(repo_id);
  if (it == repos_.end()) return Reply::error(401, "Unauthorized", "RepoNotFound");
  const Repo& repo = it->second;
  if (revision != "main" && revision != repo.commit) return Reply::error(404, "Not Found", "RevisionNotFound");

  if (api) {
    std::ostringstream j;
    j << "{\"id\":\"" << repo_id << "\",\"sha\":\"" << repo.commit << "\",\"siblings\":[";
    bool first = true;
    for (const auto& [p, bytes] : repo.files) {
      j << (first ? "" : ",") << "{\"rfilename\":\"" << p << "\"}";
      first = false;
    }
    j << "]}";
    Reply r;
    r.headers.emplace_back("Content-Type", "application/json");
    r.body = j.str();
    return r;
  }
  if (!repo.required_token.empty() && req.authorization != "Bearer " + repo.required_token)
    return Reply::error(401, "Unauthorized", "GatedRepo");
  auto file = repo.files.find(path);
  if (file == repo.files.end()) return Reply::error(404, "Not Found", "EntryNotFound");
  const std::string sha = sha256_hex(file->second.data(), file->second.size());
  Reply r;
  r.headers.emplace_back("X-Repo-Commit", repo.commit);
  if (file->second.size() >= lfs_threshold) {
    r.status = 302;
    r.reason = "Found";
    r.headers.emplace_back("Location", endpoint() + "/blobs/" + sha);
    r.headers.emplace_back("X-Linked-Etag", quote(sha));
    r.headers.emplace_back("X-Linked-Size", std::to_string(file->second.size()));
    r.headers.emplace_back("ETag", quote(sha));
    return r;
  }
  r.headers.emplace_back("ETag", quote(sha.substr(0, 40)));  // a git blob id stands in for small files
  r.body = file->second;
  return r;
}

}  // namespace diffuse::testing

#include "server/client_watch.h"

#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>

namespace diffuse::server {
namespace {

// Numeric host and port of a socket address, formatted as httplib formats
// Request::remote_addr (getnameinfo with NI_NUMERICHOST).
bool endpoint(const sockaddr_storage& addr, socklen_t len, std::string* host, int* port) {
  char h[NI_MAXHOST], p[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, h, sizeof h, p, sizeof p,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return false;
  }
  *host = h;
  *port = std::atoi(p);
  return true;
}

}  // namespace

ClientWatch::ClientWatch(const httplib::Request& req, int server_port) {
  rlimit lim{};
  int max_fd = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 65536 ? static_cast<int>(lim.rlim_cur) : 65536;
  for (int fd = 0; fd < max_fd; ++fd) {
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof peer, local_len = sizeof local;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;  // not a connected socket
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    std::string peer_host, local_host;
    int peer_port = 0, local_port = 0;
    if (!endpoint(peer, peer_len, &peer_host, &peer_port) || !endpoint(local, local_len, &local_host, &local_port)) {
      continue;
    }
    if (local_port == server_port && peer_port == req.remote_port && peer_host == req.remote_addr) {
      fd_ = fd;
      return;
    }
  }
}

bool ClientWatch::client_gone() const {
  if (fd_ < 0) return false;
  char byte = 0;
  ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;  // orderly shutdown by the peer
  if (n > 0) return false;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // reset or broken
}

}  // namespace diffuse::server

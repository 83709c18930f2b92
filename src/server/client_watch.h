// Noticing that the HTTP client of a long synchronous request (A1111
// txt2img, OpenAI generations) went away, so its job can be cancelled.
//
// cpp-httplib 0.11 (Debian's) has no Request::is_connection_closed and does
// not hand the socket to handlers. While a handler runs, httplib keeps its
// connection's socket open, so the socket can be found among this process's
// descriptors by its two endpoints (the client's address and port, which the
// Request carries, and the server's port), then peeked at without blocking.
#pragma once
#include <httplib.h>

namespace diffuse::server {

class ClientWatch {
 public:
  // Finds the server-side socket of `req` (accepted on `server_port`). When it
  // cannot be found, client_gone() always answers false (the job then runs to
  // its end, as before).
  ClientWatch(const httplib::Request& req, int server_port);
  // True once the peer closed or reset the connection. Bytes the client sent
  // (a pipelined request) do not count as gone.
  bool client_gone() const;
  bool watching() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace diffuse::server

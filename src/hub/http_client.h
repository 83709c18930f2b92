// The only file that talks libcurl: one blocking request at a time, headers
// of the final response, the body either kept in memory (API calls, error
// pages) or streamed to a sink (file downloads). Transport problems are
// returned, not thrown, because the caller decides what they mean (fall back
// to the cache, keep a partial file, retry from where it stopped, ...).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace diffuse::hub {

struct HttpRequest {
  std::string url;
  bool head = false;                 // HEAD instead of GET
  bool follow_redirects = true;      // hub metadata is read from the 302 itself, so HEAD sets false
  std::string token;                 // "Authorization: Bearer"; curl drops it on a redirect to another host
  uint64_t range_start = 0;          // > 0: "Range: bytes=N-" (resume)
  std::function<bool()> cancel;      // polled at least every 50 ms while transferring; true aborts
  long connect_timeout_s = 15;
  long stall_timeout_ms = 60000;     // no byte (header or body) for this long: abort as stalled
};

struct HttpResponse {
  long status = 0;                               // 0 when no response arrived
  std::map<std::string, std::string> headers;    // lower-case names, final response only
  std::string body;                              // kept when no sink, or for non-2xx (first 64 KiB)
  std::string effective_url;
  int transport_error = 0;                       // CURLcode; 0 = the transfer completed
  std::string transport_message;                 // curl's explanation when transport_error != 0
  // The transport error is one a new connection may not have: reset, refused,
  // timed out, stalled, the stream ended before Content-Length, a TLS or
  // HTTP/2 failure mid-transfer. False for bad URLs, certificates, our sink.
  bool transport_transient = false;
  bool stalled = false;                          // aborted after stall_timeout_ms without a byte
  bool aborted_by_sink = false;                  // the sink returned false
  bool cancelled = false;                        // HttpRequest::cancel returned true

  std::string header(const std::string& lower_name) const;  // "" when absent
  bool ok() const { return transport_error == 0 && status >= 200 && status < 300; }
};

// Receives the body of a 2xx final response in chunks. `head` holds that
// response's status (200, or 206 for a Range request) and all its headers,
// so the first call can decide whether the body is the one it asked for.
// Returning false aborts the transfer.
using BodySink = std::function<bool(const HttpResponse& head, const char* data, size_t size)>;

// Never throws for network failures; see HttpResponse::transport_error.
HttpResponse http_request(const HttpRequest& request, const BodySink& sink = nullptr);

// "https://huggingface.co:443/a/b" -> "https://huggingface.co:443"
std::string url_origin(const std::string& url);
// Percent-encodes everything except unreserved characters (RFC 3986), and
// keeps '/' when keep_slash (file paths; revisions encode it: refs%2Fpr%2F1).
std::string url_encode(const std::string& s, bool keep_slash);

}  // namespace diffuse::hub

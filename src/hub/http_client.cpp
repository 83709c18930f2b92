#include "hub/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>

namespace diffuse::hub {
namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;
// How long one wait for the socket may last: the bound on how late a cancel
// or a stall is noticed.
constexpr int kPollMs = 50;

using Clock = std::chrono::steady_clock;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  const HttpRequest* request = nullptr;
  const BodySink* sink = nullptr;
  HttpResponse* response = nullptr;
  long current_status = 0;
  Clock::time_point last_byte = Clock::now();  // of a header line or body chunk
};

// Errors that a fresh connection may not hit again (what huggingface_hub's
// http_backoff retries: connection and timeout errors, plus a stream cut
// short). Everything else (a bad URL, a refused certificate, our sink giving
// up, out of memory) would fail the same way again.
bool is_transient(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_HTTP2:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

size_t on_header(char* data, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nitems;
  t->last_byte = Clock::now();
  std::string line(data, n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {
    // A new response in a redirect chain: only the last one's headers count.
    t->response->headers.clear();
    size_t sp = line.find(' ');
    t->current_status = sp == std::string::npos ? 0 : std::strtol(line.c_str() + sp + 1, nullptr, 10);
    return n;
  }
  size_t colon = line.find(':');
  if (colon == std::string::npos) return n;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  size_t v = line.find_first_not_of(" \t", colon + 1);
  t->response->headers[name] = v == std::string::npos ? "" : line.substr(v);
  return n;
}

size_t on_body(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nmemb;
  t->last_byte = Clock::now();
  bool success = t->current_status >= 200 && t->current_status < 300;
  if (success && t->sink && *t->sink) {
    t->response->status = t->current_status;  // the sink sees the response it is reading
    if (!(*t->sink)(*t->response, data, n)) {
      t->response->aborted_by_sink = true;
      return 0;  // CURLE_WRITE_ERROR
    }
    return n;
  }
  size_t room = success ? n : std::min(n, kMaxErrorBody - std::min(kMaxErrorBody, t->response->body.size()));
  t->response->body.append(data, room);
  return n;
}

}  // namespace

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

HttpResponse http_request(const HttpRequest& request, const BodySink& sink) {
  global_init();
  HttpResponse response;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) {
    response.transport_error = CURLE_FAILED_INIT;
    response.transport_message = "curl_easy_init failed";
    return response;
  }
  Transfer t;
  t.request = &request;
  t.sink = &sink;
  t.response = &response;
  CURL* c = curl.get();
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "diffuse/0.1 (huggingface_hub compatible)");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, request.connect_timeout_s);
  // A backstop only: curl averages the speed over its last 5 s, so after a
  // fast start it sees a stall late. The loop below watches the last byte.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, std::max(1L, (request.stall_timeout_ms + 999) / 1000 + 5));
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  if (request.head) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  std::string range;
  if (request.range_start > 0) {
    range = std::to_string(request.range_start) + "-";
    curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
  }
  if (!request.token.empty()) {
    // Bearer auth through curl (not a raw header) so it is never forwarded
    // to the CDN host a hub redirect points at.
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
    curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, request.token.c_str());
  }

  // The multi interface instead of curl_easy_perform: the progress callback
  // of an idle transfer runs only about once a second, too coarse for the
  // stall detector and for a prompt cancel.
  std::unique_ptr<CURLM, decltype(&curl_multi_cleanup)> multi(curl_multi_init(), &curl_multi_cleanup);
  if (!multi || curl_multi_add_handle(multi.get(), c) != CURLM_OK) {
    response.transport_error = CURLE_FAILED_INIT;
    response.transport_message = "curl_multi_init failed";
    return response;
  }
  CURLcode rc = CURLE_OK;
  std::string own_message;
  for (;;) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(multi.get(), &running);
    if (mc != CURLM_OK) {
      rc = CURLE_FAILED_INIT;
      own_message = std::string("curl_multi_perform: ") + curl_multi_strerror(mc);
      break;
    }
    if (running == 0) {
      int queued = 0;
      while (CURLMsg* m = curl_multi_info_read(multi.get(), &queued))
        if (m->msg == CURLMSG_DONE) rc = m->data.result;
      break;
    }
    if (request.cancel && request.cancel()) {
      response.cancelled = true;
      rc = CURLE_ABORTED_BY_CALLBACK;
      own_message = "cancelled";
      break;
    }
    auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t.last_byte).count();
    if (idle >= request.stall_timeout_ms) {
      response.stalled = true;
      rc = CURLE_OPERATION_TIMEDOUT;
      char buf[96];
      std::snprintf(buf, sizeof buf, "stalled: no data for %g s", static_cast<double>(request.stall_timeout_ms) / 1000.0);
      own_message = buf;
      break;
    }
    curl_multi_poll(multi.get(), nullptr, 0, kPollMs, nullptr);
  }
  curl_multi_remove_handle(multi.get(), c);  // closes the connection of an unfinished transfer
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  response.status = status;
  char* effective = nullptr;
  if (curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective)
    response.effective_url = effective;
  if (rc != CURLE_OK) {
    response.transport_error = static_cast<int>(rc);
    response.transport_message = !own_message.empty() ? own_message
                                 : errbuf[0]          ? std::string(errbuf)
                                                      : std::string(curl_easy_strerror(rc));
    response.transport_transient = !response.aborted_by_sink && !response.cancelled && is_transient(rc);
  }
  return response;
}

std::string url_origin(const std::string& url) {
  size_t scheme = url.find("://");
  if (scheme == std::string::npos) return "";
  size_t slash = url.find('/', scheme + 3);
  return slash == std::string::npos ? url : url.substr(0, slash);
}

std::string url_encode(const std::string& s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace diffuse::hub

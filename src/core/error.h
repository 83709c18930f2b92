// Errors carry a code so the CLI can map them to exit codes and the server to
// HTTP statuses (see STYLE.md "Errors"). Messages say what and where:
// "[conv2d] weight (320,4,3,3) expects input channels 4, got x (2,8,64,64)".
#pragma once
#include <stdexcept>
#include <string>

namespace diffuse {

enum class ErrorCode {
  kInvalidArgument,  // bad user input or bad op arguments (CLI exit 2, HTTP 400/422)
  kUnsupported,      // valid request we cannot serve (e.g. inpaint models, no CUDA)
  kIo,               // file missing, unreadable, corrupt or hostile
  kOutOfMemory,
  kCancelled,        // stopped by a progress callback / Ctrl-C (CLI exit 130)
  kNotFound,         // a model, file or job that does not exist (HTTP 404)
  kRuntime,          // anything else
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] void throw_error(ErrorCode code, const std::string& message);

}  // namespace diffuse

// The only macros in the project are checks.
#define DIFFUSE_CHECK(cond, code, msg)                           \
  do {                                                           \
    if (!(cond)) ::diffuse::throw_error((code), (msg));          \
  } while (0)
#define DIFFUSE_CHECK_ARG(cond, msg) DIFFUSE_CHECK(cond, ::diffuse::ErrorCode::kInvalidArgument, msg)

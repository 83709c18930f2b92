#include "core/error.h"

namespace diffuse {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kIo: return "i/o error";
    case ErrorCode::kOutOfMemory: return "out of memory";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kRuntime: return "runtime error";
  }
  return "error";
}

void throw_error(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace diffuse

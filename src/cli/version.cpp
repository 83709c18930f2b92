#include "cli/version.h"

#include <oneapi/dnnl/dnnl.h>

#include <optional>

#include "pipeline/data_dir.h"

#include "core/ops.h"

namespace diffuse::cli {

std::string version_text() {
  const dnnl_version_t* dnnl = dnnl_version();
  std::string text = "diffuse " DIFFUSE_VERSION "\ncommit: " + std::string(git_commit()) + "\n";
  text += "backends: cpu (oneDNN " + std::to_string(dnnl->major) + "." + std::to_string(dnnl->minor) + "." +
          std::to_string(dnnl->patch) + ")";
  if (backend_compiled(Device::kCUDA)) {
    // DIFFUSE_CUDA_ARCHS: the build's CMAKE_CUDA_ARCHITECTURES ("sm_90").
    text += ", cuda (" + backend_library_versions(Device::kCUDA) + "; kernels for " DIFFUSE_CUDA_ARCHS ")";
  }
  const std::optional<std::filesystem::path> data = data_dir();
  text += "\ndata: " + (data ? data->string() : "not found (" + data_search_note() + ")");
  return text;
}

}  // namespace diffuse::cli

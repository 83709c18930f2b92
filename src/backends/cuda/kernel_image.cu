// Whether this build's kernels can run on the current device: the fat binary
// holds SASS/PTX for the architectures in CMAKE_CUDA_ARCHITECTURES only, and a
// GPU older than those cannot load any of them. Asking for the attributes of
// an empty kernel makes the runtime pick (or fail to pick) an image, without
// launching anything.
#include <cuda_runtime.h>

namespace diffuse::cuda_kernels {
namespace {
__global__ void empty_kernel() {}
}  // namespace

cudaError_t check_kernel_image() {
  cudaFuncAttributes attr{};
  return cudaFuncGetAttributes(&attr, empty_kernel);
}

}  // namespace diffuse::cuda_kernels

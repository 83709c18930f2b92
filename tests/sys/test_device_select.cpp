// The --device option's parser and resolution (sys/device_select.h), with the
// GPU list made up where the answer must not depend on this machine's GPUs.
#include <gtest/gtest.h>

#include "core/error.h"
#include "sys/device_select.h"

namespace diffuse::sys {
namespace {

GpuQuery two_fake_gpus() {
  GpuQuery q;
  q.gpus.resize(2);
  q.gpus[0].index = 0;
  q.gpus[0].name = "Fake H100";
  q.gpus[1].index = 1;
  q.gpus[1].name = "Fake L4";
  q.status = "2 CUDA devices";
  return q;
}

// The message of the Error that `fn` throws, after checking its code.
template <typename Fn>
std::string error_of(Fn fn, ErrorCode code) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

TEST(DeviceSelect, ParsesEveryAcceptedForm) {
  EXPECT_TRUE(parse_device_spec("auto").is_auto);
  DeviceSpec cpu = parse_device_spec("cpu");
  EXPECT_FALSE(cpu.is_auto);
  EXPECT_EQ(cpu.device, Device::kCPU);
  DeviceSpec cuda = parse_device_spec("cuda");
  EXPECT_EQ(cuda.device, Device::kCUDA);
  EXPECT_EQ(cuda.ordinal, 0);
  DeviceSpec cuda3 = parse_device_spec("cuda:3");
  EXPECT_FALSE(cuda3.is_auto);
  EXPECT_EQ(cuda3.device, Device::kCUDA);
  EXPECT_EQ(cuda3.ordinal, 3);
  EXPECT_EQ(parse_device_spec("cuda:12").ordinal, 12);
}

TEST(DeviceSelect, RejectsWhatIsNotADevice) {
  for (const char* bad : {"tpu", "", "CPU", "gpu", "cuda:", "cuda:-1", "cuda:1x", "cuda:+1", "cuda: 1", "cuda0",
                          "cuda:99999", "auto:0", "cpu:0"}) {
    const std::string msg = error_of([&] { parse_device_spec(bad); }, ErrorCode::kInvalidArgument);
    EXPECT_NE(msg.find("--device must be auto, cpu, cuda or cuda:N"), std::string::npos) << bad << ": " << msg;
    EXPECT_NE(msg.find("got '" + std::string(bad) + "'"), std::string::npos) << msg;
  }
  // select_device parses first: a bad value never reaches the driver.
  error_of([] { select_device("tpu"); }, ErrorCode::kInvalidArgument);
}

TEST(DeviceSelect, CpuIsAlwaysThere) {
  DeviceChoice c = select_device("cpu");
  EXPECT_EQ(c.device, Device::kCPU);
  EXPECT_EQ(c.name, "cpu");
  EXPECT_EQ(c.line, "device: cpu");
}

TEST(DeviceSelect, AutoWithoutGpusPicksTheCpuAndSaysWhy) {
  GpuQuery none;
  none.status = "CUDA driver not found (libfake.so): no NVIDIA GPU available";
  DeviceChoice c = select_device("auto", none);
  EXPECT_EQ(c.device, Device::kCPU);
  EXPECT_EQ(c.name, "cpu");
#if defined(DIFFUSE_HAVE_CUDA)
  EXPECT_EQ(c.line, "device: auto -> cpu (no CUDA device: " + none.status + ")");
#else
  EXPECT_EQ(c.line, "device: auto -> cpu (this diffuse was built without the CUDA backend)");
#endif
}

TEST(DeviceSelect, AskingForAMissingGpuIsAClearError) {
  GpuQuery none;
  none.status = "CUDA driver not found (libfake.so): no NVIDIA GPU available";
  const std::string msg = error_of([&] { select_device("cuda", none); }, ErrorCode::kUnsupported);
#if defined(DIFFUSE_HAVE_CUDA)
  EXPECT_EQ(msg, "--device cuda: no CUDA device (" + none.status + ")");
  // An ordinal beyond the list names what there is, before any CUDA call.
  const std::string beyond = error_of([] { select_device("cuda:2", two_fake_gpus()); }, ErrorCode::kUnsupported);
  EXPECT_EQ(beyond, "--device cuda:2: no such device, there are 2 CUDA devices (cuda:0 to cuda:1)");
  GpuQuery one = two_fake_gpus();
  one.gpus.pop_back();
  const std::string beyond1 = error_of([&] { select_device("cuda:1", one); }, ErrorCode::kUnsupported);
  EXPECT_EQ(beyond1, "--device cuda:1: no such device, there is 1 CUDA device (cuda:0)");
#else
  EXPECT_EQ(msg, "--device cuda: this diffuse was built without the CUDA backend (configure with -DDIFFUSE_CUDA=ON)");
#endif
}

#if defined(DIFFUSE_HAVE_CUDA)
// The backend is started on the GPU chosen. Without a real GPU the made-up
// ones cannot start: auto falls back to the CPU with the backend's reason.
// With one, the first starts (on the real device 0). Either way cuda:1 then
// fails, naming the GPU and why: no runtime device, or one process already
// running on cuda:0.
TEST(DeviceSelect, TheChosenGpuMustStart) {
  const bool real_gpu = !cuda_devices().gpus.empty();
  DeviceChoice c = select_device("auto", two_fake_gpus());
  if (real_gpu) {
    EXPECT_EQ(c.device, Device::kCUDA);
    EXPECT_EQ(c.line, "device: auto -> cuda:0 (Fake H100)");
  } else {
    EXPECT_EQ(c.device, Device::kCPU);
    EXPECT_EQ(c.line.rfind("device: auto -> cpu (no usable CUDA device: [cuda] ", 0), 0u) << c.line;
  }
  const std::string msg = error_of([] { select_device("cuda:1", two_fake_gpus()); }, ErrorCode::kUnsupported);
  EXPECT_EQ(msg.rfind("--device cuda:1: cuda:1 (Fake L4) is not usable: [cuda] ", 0), 0u) << msg;
}
#endif

}  // namespace
}  // namespace diffuse::sys

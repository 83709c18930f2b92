// diffuse bench: speed of the full pipeline on full-size architectures with
// random weights (speed does not depend on the values; the weights are never
// all zeros), or on a real checkpoint with --model.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/vae_option.h"
#include "cli/bench_controlnet.h"
#include "cli/hires_flags.h"
#include "cli/refiner_flags.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "image/image_ops.h"
#include "io/file_io.h"
#include "io/png.h"
#include "pipeline/pipeline.h"
#include "sys/device_select.h"


namespace diffuse::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string arch = "sd15", model, device = "auto", precision, sampler;  // sampler "": euler (or the kind's)
  std::string kind;  // --kind: a few-step model's defaults (pipeline/few_step.h)
  int size = 0, steps = 0, images = 4, threads = 0;
  bool json = false, skip_batch = false;
  std::string init_image, mask;  // an img2img / inpainting run after the text-to-image ones
  double strength = 0.75;
  float cfg_scale = -1.0f;  // < 0: the family's default
  std::string vae_tiling = "auto";
  std::string vae;   // --vae (cli/vae_option.h): every run decodes with it
  HiresFlags hires;  // a hires-fix run after the text-to-image ones (docs/hires-fix.md)
  RefinerFlags refiner;  // a base + refiner run after them (docs/refiner.md)
  int controlnets = 0;   // --controlnet N: every run with N random ControlNets (cli/bench_controlnet.h)
  std::vector<ControlNetUnit> control_units;
};

// What every timed run generates: the baselines' prompt at the bench's size,
// steps and sampler, seed 42, with --vae-tiling and --vae.
GenerationParams bench_params(const BenchOptions& o) {
  GenerationParams p;
  p.prompt = "a photograph of an astronaut riding a horse on mars, highly detailed";
  p.negative_prompt = "blurry, low quality";
  p.width = p.height = o.size;
  p.steps = o.steps;
  p.seed = 42;
  p.sampler = o.sampler;
  p.vae_tiling = vae_tiling_from_name(o.vae_tiling);
  p.vae = o.vae;  // --vae, resolved to a path (vae_option.h)
  p.cfg_scale = o.cfg_scale;
  p.controlnets = o.control_units;
  return p;
}

// One edit (img2img, or inpainting with a mask) at the benchmark's size and
// steps: its VAE encode, the steps it runs (strength x steps) and their time.
struct EditStats {
  double encode_ms = 0, denoise_ms = 0, decode_ms = 0, total_s = 0;
  int steps_run = 0;
};
EditStats run_edit(Pipeline& pipe, const BenchOptions& o, Device device) {
  GenerationParams p = bench_params(o);
  auto read = [](const std::string& path) {
    const std::shared_ptr<MappedFile> f = MappedFile::open(path);
    return std::vector<uint8_t>(f->data(), f->data() + f->size());
  };
  const std::vector<uint8_t> img = read(o.init_image);
  PngImage png = read_png(img.data(), img.size());
  p.edit.init_image = image::Rgb{png.width, png.height, std::move(png.rgb)};
  if (!o.mask.empty()) {
    const std::vector<uint8_t> m = read(o.mask);
    p.edit.mask = image::decode_mask(m.data(), m.size(), image::MaskConvention::kLuminance);
  }
  p.edit.strength = o.strength;
  GenerationResult r = pipe.generate(p, [&](const StepProgress& s) {
    std::fprintf(stderr, "\r  %s: step %d/%d   ", o.mask.empty() ? "img2img" : "inpaint", s.step, s.total_steps);
    return interrupted();
  });
  std::fprintf(stderr, "\n");
  backend_for(device).synchronize();
  EditStats st;
  st.encode_ms = r.timings.vae_encode_s * 1e3;
  st.denoise_ms = r.timings.denoise_s * 1e3;
  st.decode_ms = r.timings.vae_decode_s * 1e3;
  st.total_s = r.timings.total_s;
  st.steps_run = r.steps_run;
  return st;
}

// One hires-fix call from --size: both passes, the upscale between them, one decode.
struct HiresStats {
  double text_ms = 0, encode_ms = 0, denoise_ms = 0, decode_ms = 0, total_s = 0;
  int steps_run = 0, width = 0, height = 0;
};
HiresStats run_hires(Pipeline& pipe, const BenchOptions& o, Device device) {
  GenerationParams p = bench_params(o);
  apply_hires_flags(o.hires, p);
  GenerationResult r = pipe.generate(p, [&](const StepProgress& s) {
    std::fprintf(stderr, "\r  hires: step %d/%d   ", s.step, s.total_steps);
    return interrupted();
  });
  std::fprintf(stderr, "\n");
  backend_for(device).synchronize();
  HiresStats st;
  st.text_ms = r.timings.text_encode_s * 1e3;
  st.encode_ms = r.timings.vae_encode_s * 1e3;
  st.denoise_ms = r.timings.denoise_s * 1e3;
  st.decode_ms = r.timings.vae_decode_s * 1e3;
  st.total_s = r.timings.total_s;
  st.steps_run = r.steps_run;
  st.width = r.images.empty() ? 0 : r.images[0].width;
  st.height = r.images.empty() ? 0 : r.images[0].height;
  return st;
}

// FLOPs of one batch-2 UNet call and one VAE decode at each architecture's
// native resolution, counted with torch.utils.flop_counter on the diffusers
// models (shared/fixtures/baselines): the floor every timing is compared with.
struct FlopRef {
  const char* arch;
  int size;
  double unet_b2_tflop, vae_tflop;
};
constexpr FlopRef kFlops[] = {{"sd15", 512, 1.607, 2.515}, {"sd21", 768, 4.298, 5.754}, {"sdxl", 1024, 13.522, 10.470}};

double peak_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

// Resident set size now, in bytes (/proc/self/statm: pages).
size_t current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  size_t total_pages = 0, resident_pages = 0;
  f >> total_pages >> resident_pages;
  return resident_pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Samples the RSS every few milliseconds and keeps the peak of each phase, so
// the report says whether loading, denoising or the VAE decode sets the
// process peak (getrusage only gives the peak of the whole process).
class RssMonitor {
 public:
  enum Phase { kLoad, kDenoise, kVae, kPhases };
  RssMonitor() : thread_([this] { loop(); }) {}
  ~RssMonitor() {
    stop_ = true;
    thread_.join();
  }
  void set_phase(Phase p) {
    sample();
    phase_ = p;
  }
  double peak_gib(Phase p) const { return peak_[p].load() / double(1ull << 30); }

 private:
  void sample() {
    size_t rss = current_rss_bytes();
    std::atomic<size_t>& peak = peak_[phase_.load()];
    size_t prev = peak.load();
    while (rss > prev && !peak.compare_exchange_weak(prev, rss)) {
    }
  }
  void loop() {
    while (!stop_) {
      sample();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<int> phase_{kLoad};
  std::atomic<size_t> peak_[kPhases] = {};
  std::thread thread_;
};

long minor_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

struct RunStats {
  double step_ms = 0;  // median step time (after the first step)
  double faults_per_step = -1;  // minor page faults per step after the first (new memory touched), -1: one step
  double text_ms = 0, vae_ms = 0, total_s = 0, first_step_s = 0;
  double peak_reserved_gib = 0, peak_in_use_gib = 0;  // the device allocator's peaks, this run
  double transfers_per_step = 0;  // host<->device copies in the denoising loop, per step (0 by design)
  double peak_in_use_denoise_gib = 0, peak_in_use_vae_gib = 0;  // the same, split at the last step
};

// Memory high-water marks of the device's allocator (Backend::memory_stats:
// the CUDA caching allocator, or the host allocator on the CPU). Weights are
// included; the CUDA context and library handles are not counted, as in
// torch's max_memory_reserved / max_memory_allocated.
void reset_device_peaks(Device device) {
  Backend& be = backend_for(device);
  be.empty_cache();  // cached blocks of earlier runs would count as reserved
  be.reset_peak_memory_stats();
}
void read_device_peaks(Device device, RunStats& st) {
  const DeviceMemoryStats a = backend_for(device).memory_stats();
  st.peak_reserved_gib = a.peak_reserved_bytes / double(1ull << 30);
  st.peak_in_use_gib = a.peak_in_use_bytes / double(1ull << 30);
}

// fresh_memory: start from an empty allocator cache and report this run's
// peaks (used for the untimed runs, so timed runs keep a warm cache).
RunStats run_once(Pipeline& pipe, const BenchOptions& o, int images, Clock::time_point t_origin,
                  RssMonitor& rss, Device device, bool fresh_memory = false) {
  GenerationParams p = bench_params(o);
  p.images = images;
  std::vector<double> step_times;
  if (fresh_memory) reset_device_peaks(device);
  Backend& backend = backend_for(device);
  rss.set_phase(RssMonitor::kDenoise);
  auto last = Clock::now();
  double first_step_s = 0;
  long faults_after_first = 0, faults_at_last = 0;
  size_t denoise_peak = 0, denoise_reserved = 0;
  GenerationResult r = pipe.generate(p, [&](const StepProgress& s) {
    backend.synchronize();  // the loop only enqueues work on a GPU: time the finished step
    auto now = Clock::now();
    step_times.push_back(std::chrono::duration<double, std::milli>(now - last).count());
    if (s.step == 1) {
      first_step_s = std::chrono::duration<double>(now - t_origin).count();
      faults_after_first = minor_faults();
    }
    if (s.step == s.total_steps) faults_at_last = minor_faults();
    last = now;
    if (s.step == s.total_steps) {
      rss.set_phase(RssMonitor::kVae);  // what follows is the decode
      if (fresh_memory) {  // device peak of text encoding + denoising; restart the count for the decode
        const DeviceMemoryStats a = backend.memory_stats();
        denoise_peak = a.peak_in_use_bytes;
        denoise_reserved = a.peak_reserved_bytes;
        backend.reset_peak_memory_stats();
      }
    }
    std::fprintf(stderr, "\r  %d images: step %d/%d  %.1f ms   ", images, s.step, s.total_steps, step_times.back());
    return interrupted();
  });
  std::fprintf(stderr, "\n");
  RunStats st;
  // The first step's time also includes the text encoder; take the median of the rest.
  std::vector<double> rest(step_times.begin() + (step_times.size() > 1 ? 1 : 0), step_times.end());
  std::sort(rest.begin(), rest.end());
  st.step_ms = rest[rest.size() / 2];
  st.text_ms = r.timings.text_encode_s * 1e3;
  st.vae_ms = r.timings.vae_decode_s * 1e3;
  st.total_s = r.timings.total_s;
  st.first_step_s = first_step_s;
  if (step_times.size() > 1)
    st.faults_per_step = static_cast<double>(faults_at_last - faults_after_first) / (step_times.size() - 1);
  st.transfers_per_step = static_cast<double>(r.timings.loop_transfers) / std::max<size_t>(step_times.size(), 1);
  if (fresh_memory) {
    read_device_peaks(device, st);
    st.peak_in_use_vae_gib = st.peak_in_use_gib;
    st.peak_in_use_denoise_gib = denoise_peak / double(1ull << 30);
    st.peak_in_use_gib = std::max(st.peak_in_use_denoise_gib, st.peak_in_use_vae_gib);
    st.peak_reserved_gib = std::max(st.peak_reserved_gib, denoise_reserved / double(1ull << 30));
  }
  return st;
}

int run_bench(BenchOptions o) {
  install_signal_handlers();
  if (o.threads > 0) set_num_threads(o.threads);
  LoadOptions load;
  const sys::DeviceChoice device = sys::select_device(o.device);
  std::fprintf(stderr, "%s\n", device.line.c_str());
  load.device = device.device;
  o.device = device.name;  // the report names what ran: "cpu", "cuda:0"
  if (!o.precision.empty()) load.precision = precision_from_name(o.precision);
  const bool cpu = load.device == Device::kCPU;
  load.random_kind = o.kind;
  DIFFUSE_CHECK_ARG(o.kind.empty() || o.model.empty(), "--kind is for random weights; a --model's kind is detected");

  RssMonitor rss;
  auto t0 = Clock::now();
  std::unique_ptr<Pipeline> pipe = o.model.empty() ? Pipeline::random(o.arch, load) : Pipeline::load(resolve_model(o.model), load);
  double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double rss_loaded_gib = current_rss_bytes() / double(1ull << 30);  // weights (+ what loading kept)
  const ModelInfo& info = pipe->info();
  // A few-step model (--kind, or a --model detected as one) runs with its kind's defaults where
  // flags are absent; other models with the baselines' (euler, 3 / 30 steps).
  const bool few_step = !info.kind.empty();
  if (o.steps == 0) o.steps = few_step ? info.default_steps : cpu ? 3 : 30;
  if (o.sampler.empty()) o.sampler = few_step ? info.default_sampler : "euler";
  if (few_step && o.cfg_scale < 0) o.cfg_scale = info.default_cfg;
  if (few_step)
    std::fprintf(stderr, "diffuse bench: few-step %s model: %d steps, cfg %g, %s\n", info.kind.c_str(), o.steps,
                 o.cfg_scale, o.sampler.c_str());
  if (o.size == 0) o.size = info.default_width;
  std::string arch = o.model.empty() ? o.arch : std::string(family_name(info.family));
  const Precision prec = load.precision.value_or(cpu ? Precision::kFp32 : Precision::kFp16);
  // --controlnet N: N ControlNets of the model's family act at every step of every run.
  const RandomControlNets control_nets(info.family, o.controlnets, o.size, o.size);
  o.control_units = control_nets.units();
  if (o.controlnets > 0)
    std::fprintf(stderr, "diffuse bench: %d random %s ControlNet(s) at every step (weights made in %.1f s)\n",
                 o.controlnets, family_name(info.family), control_nets.write_s());
  // CFG runs when the scale is above 1, except on a UNet that takes the guidance as an embedding (LCM).
  const bool cfg_on = (o.cfg_scale < 0 ? info.default_cfg : o.cfg_scale) > 1.0f && !info.guidance_embedding;
  std::fprintf(stderr, "diffuse bench: %s @ %dx%d on %s, %s, %s, %d steps, CFG %s (loaded in %.2f s)\n",
               info.name.c_str(), o.size, o.size, o.device.c_str(), precision_name(prec), o.sampler.c_str(), o.steps,
               cfg_on ? "on" : "off", load_s);

  // A cold run first (its first step also picks the cuDNN/cuBLASLt plans),
  // then the timed runs: steady state, as a server sees it.
  RunStats cold = run_once(*pipe, o, 1, t0, rss, load.device, true);
  // On the CPU the cold run is the one-image run (a second costs minutes), except
  // when an edit is compared with it: then both are warm.
  const bool warm_one = !cpu || !o.init_image.empty();
  RunStats one = warm_one ? run_once(*pipe, o, 1, Clock::now(), rss, load.device) : cold;
  one.peak_reserved_gib = cold.peak_reserved_gib;
  one.peak_in_use_gib = cold.peak_in_use_gib;
  one.peak_in_use_denoise_gib = cold.peak_in_use_denoise_gib;
  one.peak_in_use_vae_gib = cold.peak_in_use_vae_gib;
  RunStats four;
  if (!o.skip_batch) {
    RunStats warm = cpu ? RunStats{} : run_once(*pipe, o, o.images, Clock::now(), rss, load.device, true);  // batch shapes' warm-up
    four = run_once(*pipe, o, o.images, Clock::now(), rss, load.device);
    four.peak_reserved_gib = warm.peak_reserved_gib;
    four.peak_in_use_gib = warm.peak_in_use_gib;
  }

  std::optional<EditStats> edit;
  if (!o.init_image.empty()) {
    run_edit(*pipe, o, load.device);  // warm-up (the encoder's plans)
    edit = run_edit(*pipe, o, load.device);
  }
  std::optional<HiresStats> hires;
  if (!o.hires.hires.empty()) {
    if (!cpu) run_hires(*pipe, o, load.device);  // warm-up (the target size's plans)
    hires = run_hires(*pipe, o, load.device);
  }
  std::optional<RefinerBenchStats> refined;
  if (!o.refiner.refiner.empty()) {
    GenerationParams rp;
    rp.prompt = "a photograph of an astronaut riding a horse on mars, highly detailed";
    rp.negative_prompt = "blurry, low quality";
    rp.width = rp.height = o.size;
    rp.steps = o.steps;
    rp.seed = 42;
    rp.sampler = o.sampler;
    refined = run_refiner_bench(*pipe, o.refiner, load, rp);
  }

  double unet_tflop = 0, vae_tflop = 0;
  for (const FlopRef& f : kFlops) {
    std::string a = f.arch;
    if ((a == arch || (a == "sd15" && arch == "sd1") || (a == "sd21" && arch == "sd2")) && f.size == o.size) {
      unet_tflop = f.unet_b2_tflop;
      vae_tflop = f.vae_tflop;
    }
  }
  // Without CFG (a guidance scale of 1 or less) a step is one batch-1 UNet call.
  // An LCM-distilled UNet takes the guidance as its embedding: one batch too.
  if ((o.cfg_scale >= 0 && o.cfg_scale <= 1) || info.guidance_embedding) unet_tflop /= 2;
  auto tflops = [](double tflop, double ms) { return tflop > 0 && ms > 0 ? tflop / (ms / 1e3) : 0.0; };
  nlohmann::json j = {
      {"model", info.name},
      {"arch", arch},
      {"device", o.device},
      {"precision", precision_name(prec)},
      {"size", o.size},
      {"steps", o.steps},
      {"sampler", o.sampler},
      {"cfg_scale", o.cfg_scale < 0 ? nlohmann::json(nullptr) : nlohmann::json(o.cfg_scale)},
      {"controlnets", o.controlnets},
      {"load_s", load_s},
      {"time_to_first_step_s", cold.first_step_s},
      {"cold_whole_image_s", cold.total_s},
      {"one_image", {{"step_ms", one.step_ms}, {"it_per_s", 1e3 / one.step_ms},
                     {"unet_tflops", tflops(unet_tflop, one.step_ms)}, {"text_encode_ms", one.text_ms},
                     {"vae_decode_ms", one.vae_ms}, {"vae_tflops", tflops(vae_tflop, one.vae_ms)},
                     {"whole_image_s", one.total_s}, {"peak_reserved_gib", one.peak_reserved_gib},
                     {"peak_in_use_gib", one.peak_in_use_gib}, {"peak_in_use_denoise_gib", one.peak_in_use_denoise_gib},
                     {"peak_in_use_vae_gib", one.peak_in_use_vae_gib}, {"page_faults_per_step", one.faults_per_step},
                     {"host_device_copies_per_step", one.transfers_per_step}}},
      {"peak_rss_gib", peak_rss_gib()},
      {"peak_rss_load_gib", rss.peak_gib(RssMonitor::kLoad)},
      {"rss_after_load_gib", rss_loaded_gib},
      {"peak_rss_denoise_gib", rss.peak_gib(RssMonitor::kDenoise)},
      {"peak_rss_vae_gib", rss.peak_gib(RssMonitor::kVae)},
  };
  if (!o.skip_batch) {
    j["batch"] = {{"images", o.images},        {"step_ms", four.step_ms},
                  {"it_per_s", 1e3 / four.step_ms}, {"unet_tflops", tflops(unet_tflop * o.images, four.step_ms)},
                  {"vae_decode_ms", four.vae_ms}, {"vae_tflops", tflops(vae_tflop * o.images, four.vae_ms)},
                  {"whole_s", four.total_s}, {"peak_reserved_gib", four.peak_reserved_gib},
                  {"peak_in_use_gib", four.peak_in_use_gib},
                  {"host_device_copies_per_step", four.transfers_per_step}};
  }
  // Img2img at strength s should cost s x the text-to-image denoising plus one VAE encode.
  double edit_expected_ms = 0;
  if (edit) {
    edit_expected_ms = one.step_ms * edit->steps_run;
    j["edit"] = {{"kind", o.mask.empty() ? "img2img" : "inpaint"}, {"strength", o.strength},
                 {"steps_run", edit->steps_run}, {"vae_encode_ms", edit->encode_ms},
                 {"denoise_ms", edit->denoise_ms}, {"denoise_expected_ms", edit_expected_ms},
                 {"denoise_vs_expected", edit->denoise_ms / edit_expected_ms}, {"vae_decode_ms", edit->decode_ms},
                 {"whole_image_s", edit->total_s}};
  }
  if (refined) {
    j["refiner"] = {{"refiner", refined->refiner}, {"switch_at", refined->switch_at}, {"steps", refined->steps},
                    {"unet_evals", refined->unet_evals}, {"load_s", refined->load_s},
                    {"text_encode_ms", refined->text_ms}, {"denoise_ms", refined->denoise_ms},
                    {"vae_decode_ms", refined->decode_ms}, {"whole_image_s", refined->total_s},
                    {"peak_device_gib", refined->peak_device_gib}, {"park_s", refined->park_s}};
  }
  if (hires) {
    j["hires"] = {{"hires", o.hires.hires}, {"upscaler", o.hires.upscaler}, {"denoise", o.hires.denoise},
                  {"hires_steps", o.hires.steps}, {"width", hires->width}, {"height", hires->height},
                  {"steps_run", hires->steps_run}, {"text_encode_ms", hires->text_ms},
                  {"vae_encode_ms", hires->encode_ms}, {"denoise_ms", hires->denoise_ms},
                  {"vae_decode_ms", hires->decode_ms}, {"whole_image_s", hires->total_s}};
  }
  if (o.json) {
    std::cout << j.dump(2) << std::endl;
    return kExitOk;
  }
  std::printf("%-28s %14s", "", "1 image");
  if (!o.skip_batch) std::printf(" %14s", (std::to_string(o.images) + " images").c_str());
  if (o.controlnets > 0) std::printf("\n%-28s %14d", "ControlNets per step", o.controlnets);
  std::printf("\n%-28s %14.1f", o.controlnets > 0 ? "step + ControlNets, CFG (ms)" : "UNet step, CFG (ms)", one.step_ms);
  if (!o.skip_batch) std::printf(" %14.1f", four.step_ms);
  std::printf("\n%-28s %14.2f", "it/s", 1e3 / one.step_ms);
  if (!o.skip_batch) std::printf(" %14.2f", 1e3 / four.step_ms);
  if (unet_tflop > 0) {
    std::printf("\n%-28s %14.2f", "UNet TFLOP/s", tflops(unet_tflop, one.step_ms));
    if (!o.skip_batch) std::printf(" %14.2f", tflops(unet_tflop * o.images, four.step_ms));
  }
  std::printf("\n%-28s %14.1f", "text encode (ms)", one.text_ms);
  std::printf("\n%-28s %14.1f", "VAE decode (ms)", one.vae_ms);
  if (!o.skip_batch) std::printf(" %14.1f", four.vae_ms);
  if (vae_tflop > 0) {
    std::printf("\n%-28s %14.2f", "VAE TFLOP/s", tflops(vae_tflop, one.vae_ms));
    if (!o.skip_batch) std::printf(" %14.2f", tflops(vae_tflop * o.images, four.vae_ms));
  }
  if (one.faults_per_step >= 0) std::printf("\n%-28s %14.0f", "page faults per step", one.faults_per_step);
  std::printf("\n%-28s %14.1f", "host<->device copies/step", one.transfers_per_step);
  if (!o.skip_batch) std::printf(" %14.1f", four.transfers_per_step);
  std::printf("\n%-28s %14.2f", "whole image(s) (s)", one.total_s);
  if (!o.skip_batch) std::printf(" %14.2f", four.total_s);
  // The device allocator's own counters (CUDA caching allocator, or the host allocator).
  std::printf("\n%-28s %14.2f", cpu ? "peak allocator reserved (GiB)" : "peak device reserved (GiB)",
              one.peak_reserved_gib);
  if (!o.skip_batch && !cpu) std::printf(" %14.2f", four.peak_reserved_gib);
  std::printf("\n%-28s %14.2f", cpu ? "peak allocator in use (GiB)" : "peak device in use (GiB)", one.peak_in_use_gib);
  if (!o.skip_batch && !cpu) std::printf(" %14.2f", four.peak_in_use_gib);
  std::printf("\n%-28s %8.2f / %.2f", "  denoise / VAE phase (GiB)", one.peak_in_use_denoise_gib,
              one.peak_in_use_vae_gib);
  std::printf("\n%-28s %14.2f\n%-28s %14.2f\n%-28s %14.2f\n", "cold first image (s)", cold.total_s,
              "time to first step (s)", cold.first_step_s, "peak RSS (GiB)", peak_rss_gib());
  std::printf("%-28s %14.2f\n", "RSS after load (GiB)", rss_loaded_gib);
  if (edit) {
    std::printf("%s at strength %.2f: %d of %d steps\n", o.mask.empty() ? "img2img" : "inpainting", o.strength,
                edit->steps_run, o.steps);
    std::printf("%-28s %14.1f\n%-28s %14.1f\n%-28s %14.1f\n%-28s %14.2f\n%-28s %14.2f\n", "  VAE encode (ms)",
                edit->encode_ms, "  denoise (ms)", edit->denoise_ms, "  steps x txt2img step (ms)", edit_expected_ms,
                "  denoise / expected", edit->denoise_ms / edit_expected_ms, "  whole image (s)", edit->total_s);
  }
  if (refined) {
    std::printf("base + refiner %s (switch at %.2f): %d steps, %d UNet evaluations; refiner loaded in %.1f s\n",
                refined->refiner.c_str(), refined->switch_at, refined->steps, refined->unet_evals, refined->load_s);
    std::printf("%-28s %14.1f\n%-28s %14.1f\n%-28s %14.2f\n", "  denoise, both models (ms)", refined->denoise_ms,
                "  VAE decode (ms)", refined->decode_ms, "  whole image (s)", refined->total_s);
    if (refined->peak_device_gib > 0) std::printf("%-28s %14.2f\n", "  peak device memory (GiB)", refined->peak_device_gib);
    if (refined->park_s > 0) std::printf("%-28s %14.2f\n", "  models taking turns (s)", refined->park_s);
  }
  if (hires) {
    std::printf("hires fix %s (%s, denoise %.2f): %dx%d -> %dx%d, %d steps in all\n", o.hires.hires.c_str(),
                o.hires.upscaler.c_str(), o.hires.denoise, o.size, o.size, hires->width, hires->height,
                hires->steps_run);
    std::printf("%-28s %14.1f\n%-28s %14.1f\n%-28s %14.1f\n%-28s %14.2f\n", "  VAE encode (ms)", hires->encode_ms,
                "  denoise, both passes (ms)", hires->denoise_ms, "  VAE decode (ms)", hires->decode_ms,
                "  whole image (s)", hires->total_s);
  }
  std::printf("%-28s %14s\n", "peak RSS of each phase", "");
  std::printf("%-28s %14.2f\n%-28s %14.2f\n%-28s %14.2f\n", "  load (GiB)", rss.peak_gib(RssMonitor::kLoad),
              "  text + denoising (GiB)", rss.peak_gib(RssMonitor::kDenoise), "  VAE decode (GiB)",
              rss.peak_gib(RssMonitor::kVae));
  return kExitOk;
}

}  // namespace

Action add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* c = app.add_subcommand("bench", "Measure speed on a full-size architecture with random weights");
  c->footer(
      "Examples:\n"
      "  diffuse bench --arch sd15 --device cpu --size 512 --steps 3\n"
      "  diffuse bench --arch sdxl --device cuda --json\n"
      "  diffuse bench --arch sd15 --device cuda --init-image photo.png --strength 0.6   (img2img too)\n"
      "  diffuse bench --arch sd15 --size 512 --steps 4 --no-batch --hires 2x --hires-denoise 0.5   (a hires fix too)\n"
      "  diffuse bench --arch sdxl --device cuda --refiner random --refiner-switch-at 0.8   (base + refiner too)\n"
      "  diffuse bench --arch sd15 --device cpu --steps 2 --no-batch --controlnet 2   (step time with 2 ControlNets)\n"
      "On CUDA it reports peak device memory (allocator high-water mark, split into the denoising and\n"
      "VAE phases). Environment switches for comparisons: DIFFUSE_CUDA_GRAPH=0 (eager steps),\n"
      "DIFFUSE_CUDA_LAYOUT=nchw (no channels-last), DIFFUSE_CUDA_TF32=0 (exact f32 for SDXL's upcast\n"
      "VAE), DIFFUSE_CUDA_ATTN_SINGLE_BUFFER=1, DIFFUSE_CUDA_LOG=1 (cuDNN choices).");
  c->add_option("--arch", o->arch, "sd15, sd21 or sdxl (default: sd15)");
  c->add_option("--model", o->model, "Benchmark a real checkpoint instead of random weights");
  c->add_option("--device", o->device, sys::kDeviceHelp);
  c->add_option("--size", o->size, "Image side in pixels (default: the architecture's native size)");
  c->add_option("--steps", o->steps, "Denoising steps (default: 3 on cpu, 30 on cuda)");
  c->add_option("--images", o->images, "Images in the batched run (default: 4)");
  c->add_option("--precision", o->precision, "fp32, bf16 or fp16");
  c->add_option("--sampler", o->sampler, "Sampler (default: euler, as the baselines; with --kind the kind's)");
  c->add_option("--kind", o->kind,
                "Random weights of a few-step model: turbo, lcm (adds the UNet's guidance embedding, "
                "time_cond_proj_dim 256), lightning or hyper; its steps, CFG, sampler and size are the defaults")
      ->check(CLI::IsMember({"turbo", "lcm", "lightning", "hyper"}));
  c->add_option("--cfg-scale", o->cfg_scale,
                "Guidance scale (default: the family's, 7.5 / SDXL 5); <= 1 runs one UNet batch per step "
                "instead of two, as few-step LCM / Turbo runs do");
  c->add_option("--threads", o->threads, "CPU threads");
  c->add_flag("--no-batch", o->skip_batch, "Skip the batched run");
  c->add_option("--init-image", o->init_image,
                "Also time img2img from this PNG (resized to --size): VAE encode + strength x steps");
  c->add_option("--mask", o->mask, "With --init-image: time inpainting with this mask instead");
  c->add_option("--strength", o->strength, "Denoising strength of the --init-image run (default: 0.75)")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--vae-tiling", o->vae_tiling, "VAE decode in tiles: auto, on or off (default: auto)");
  c->add_option("--vae", o->vae, kVaeHelp);
  add_hires_flags(c, o->hires);
  add_refiner_flags(c, o->refiner);  // --refiner MODEL or "random" (the published refiner, random weights)
  c->add_option("--controlnet", o->controlnets,
                "Run every generation with N ControlNets (0, 1 or 2) of the model's family, random full-size "
                "weights: the step time then includes them (docs/controlnet.md)")
      ->check(CLI::Range(0, 2));
  c->add_flag("--json", o->json, "Print the results as JSON");
  return [o]() {
    o->vae = resolve_vae_option(o->vae, {kDefaultVaeDir});
    return run_bench(*o);
  };
}

}  // namespace diffuse::cli

// _diffuse: the native half of the Python package (docs/python.md). It binds
// the public API of src/pipeline/pipeline.h, the device list and telemetry of
// src/sys; python/diffuse/*.py give it the diffusers-like surface.
//
// Threads: every call that computes (load, generate) releases the GIL. The
// progress callback takes it back once per step to run Python's signal
// handlers (Ctrl-C: KeyboardInterrupt at the next step) and the caller's
// on_step function.
//
// Errors: the engine's Error codes become Python exceptions with its message
// (kInvalidArgument ValueError, kNotFound FileNotFoundError, kCancelled
// diffuse.CancelledError, anything else RuntimeError).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/error.h"
#include "core/thread_pool.h"
#include "hub/hub_cache.h"
#include "hub/model_aliases.h"
#include "params.h"
#include "pipeline/data_dir.h"
#include "pipeline/demo_model.h"
#include "pipeline/pipeline.h"
#include "sampling/sampler_catalog.h"
#include "sys/cpu_info.h"
#include "sys/cuda_devices.h"
#include "sys/device_select.h"
#include "sys/devices.h"
#include "sys/telemetry.h"
#include "text/lora_tags.h"

namespace py = pybind11;
namespace fs = std::filesystem;

namespace diffuse::python {
namespace {

// diffuse.CancelledError, created at import (a RuntimeError).
PyObject* g_cancelled_error = nullptr;

// Python's json.loads of a nlohmann value: dicts, lists, numbers as Python's.
py::object to_python(const nlohmann::json& j) { return py::module_::import("json").attr("loads")(j.dump()); }

// The CLI's --model resolution (cli/cmd_hub.cpp resolve_model): a path, "demo",
// an alias or repo id in the Hugging Face cache. Never downloads.
std::string resolve_model(const std::string& spec) {
  std::error_code ec;
  if (spec.empty() || spec == "demo") {
    if (auto demo = demo_model_path()) return *demo;
    throw_error(ErrorCode::kNotFound,
                "the built-in demo model (models/demo) was not found (" + data_search_note() + ")");
  }
  if (fs::exists(spec, ec)) return spec;
  hub::HubOptions hub = hub::HubOptions::from_env();
  const hub::ModelAlias* alias = hub::find_alias(spec);
  const std::string repo = alias ? alias->repo : spec;
  const bool repo_like = repo.find('/') != std::string::npos && repo.find("..") == std::string::npos &&
                         repo[0] != '/' && repo[0] != '.';
  if (repo_like) {
    if (auto path = hub::resolve_cached(repo, hub)) return *path;
  }
  if (repo_like || alias) {
    throw_error(ErrorCode::kNotFound,
                "model '" + spec + "' is not downloaded; fetch it with: diffuse pull " + spec);
  }
  throw_error(ErrorCode::kNotFound, "model not found: " + spec +
                                        " (give a diffusers folder, a .safetensors/.ckpt file, a repo id such as "
                                        "stable-diffusion-v1-5/stable-diffusion-v1-5, an alias: sd14, sd15, sd21, "
                                        "sdxl, or None for the built-in demo model)");
}

// A numpy view of a CPU tensor (f32, contiguous), owning a handle to its storage.
py::array tensor_to_numpy(const Tensor& t_in) {
  if (!t_in.defined()) return py::none();
  auto held = std::make_unique<Tensor>(t_in.to(Device::kCPU).to(DType::kF32).contiguous());
  std::vector<py::ssize_t> shape(held->shape().begin(), held->shape().end());
  float* data = held->data<float>();
  py::capsule owner(held.release(), [](void* p) { delete static_cast<Tensor*>(p); });
  return py::array_t<float>(shape, data, owner);
}

// One generate() call's result. The images are numpy views of the engine's
// buffers (no copy): each array holds a reference to this result.
class PyResult {
 public:
  explicit PyResult(GenerationResult r) : r_(std::make_shared<GenerationResult>(std::move(r))) {}

  py::list images() const {
    py::list out;
    for (Image& im : r_->images) {
      auto* keep = new std::shared_ptr<GenerationResult>(r_);
      py::capsule owner(keep, [](void* p) { delete static_cast<std::shared_ptr<GenerationResult>*>(p); });
      const py::ssize_t h = im.height, w = im.width;
      out.append(py::array_t<uint8_t>({h, w, py::ssize_t{3}}, {w * 3, py::ssize_t{3}, py::ssize_t{1}},
                                      im.rgb.data(), owner));
    }
    return out;
  }
  std::vector<int64_t> seeds() const {
    std::vector<int64_t> s;
    for (const Image& im : r_->images) s.push_back(im.seed);
    return s;
  }
  std::vector<std::string> infotexts() const {
    std::vector<std::string> s;
    for (const Image& im : r_->images) s.push_back(im.parameters);
    return s;
  }
  // [n, H, W, 3] float32 in [0, 1]: a strided view of the decoded NCHW tensor.
  py::object decoded() const {
    if (!r_->decoded.defined()) return py::none();
    py::array nchw = tensor_to_numpy(r_->decoded);
    return nchw.attr("transpose")(0, 2, 3, 1);
  }
  py::object latents() const { return tensor_to_numpy(r_->final_latents); }
  py::dict timings() const {
    const Timings& t = r_->timings;
    py::dict d;
    d["load_s"] = t.load_s;
    d["text_encode_s"] = t.text_encode_s;
    d["vae_encode_s"] = t.vae_encode_s;
    d["denoise_s"] = t.denoise_s;
    d["vae_decode_s"] = t.vae_decode_s;
    d["lora_s"] = t.lora_s;
    d["total_s"] = t.total_s;
    d["unet_evals"] = t.unet_evals;
    return d;
  }
  const GenerationResult& r() const { return *r_; }
  std::vector<std::string> extra_warnings;

 private:
  std::shared_ptr<GenerationResult> r_;
};

py::dict info_dict(const ModelInfo& i, const std::string& device, const std::string& dtype) {
  py::dict d;
  d["name"] = i.name;
  d["path"] = i.path;
  d["family"] = family_name(i.family);
  d["prediction"] = prediction_name(i.prediction);
  d["single_file"] = i.single_file;
  d["refiner"] = i.refiner;
  d["sha256"] = i.sha256;
  d["hash"] = i.short_hash;
  py::dict defaults;
  defaults["width"] = i.default_width;
  defaults["height"] = i.default_height;
  defaults["num_inference_steps"] = i.default_steps;
  defaults["guidance_scale"] = i.default_cfg;
  defaults["sampler"] = i.default_sampler;
  d["defaults"] = defaults;
  d["license"] = i.license;
  d["warnings"] = i.warnings;
  d["device"] = device;
  d["dtype"] = dtype;
  return d;
}

class PyPipeline {
 public:
  static std::shared_ptr<PyPipeline> load(const std::string& spec, const std::string& device,
                                          const std::optional<std::string>& dtype, const std::string& config_dir,
                                          const std::optional<std::string>& prediction) {
    LoadOptions load;
    sys::parse_device_spec(device);  // a bad value fails before anything is read
    if (dtype) load.precision = precision_from_name(*dtype);
    if (prediction) {
      if (*prediction == "epsilon") {
        load.prediction = Prediction::kEpsilon;
      } else if (*prediction == "v" || *prediction == "v_prediction") {
        load.prediction = Prediction::kVPrediction;
      } else {
        throw_error(ErrorCode::kInvalidArgument, "prediction_type must be 'epsilon' or 'v_prediction', got '" +
                                                     *prediction + "'");
      }
    }
    load.config_dir = config_dir;
    auto out = std::make_shared<PyPipeline>();
    {
      py::gil_scoped_release release;
      const std::string path = resolve_model(spec);
      const sys::DeviceChoice choice = sys::select_device(device);
      load.device = choice.device;
      out->device_ = choice.name;
      out->device_line_ = choice.line;
      out->pipe_ = Pipeline::load(path, load);
    }
    const Precision p = load.precision.value_or(load.device == Device::kCPU ? Precision::kFp32 : Precision::kFp16);
    out->dtype_ = precision_name(p);
    return out;
  }

  py::dict info() const { return info_dict(pipe_->info(), device_, dtype_); }
  const std::string& device() const { return device_; }
  const std::string& device_line() const { return device_line_; }

  // on_step(step, total, latents_fn) -> bool stop, called with the GIL held
  // after every step; latents_fn() returns the current latents as numpy.
  PyResult generate(const py::dict& kwargs, const py::object& on_step) {
    CallParams c = read_call_params(kwargs);
    std::optional<py::error_already_set> python_error;  // raised by a signal handler or on_step
    auto progress = [&](const StepProgress& s) -> bool {
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) {  // Ctrl-C: KeyboardInterrupt (or what the handler raised)
        python_error.emplace();
        return true;
      }
      if (on_step.is_none()) return false;
      try {
        const Tensor latents = s.latents;
        py::cpp_function latents_fn([latents]() { return tensor_to_numpy(latents); });
        const py::object stop = on_step(s.step, s.total_steps, latents_fn);
        const int truth = PyObject_IsTrue(stop.ptr());
        if (truth < 0) throw py::error_already_set();
        return truth == 1;
      } catch (py::error_already_set& e) {
        python_error.emplace(std::move(e));
        return true;
      }
    };
    GenerationResult r;
    try {
      py::gil_scoped_release release;
      r = pipe_->generate(c.params, progress);
    } catch (const Error& e) {
      if (python_error && e.code() == ErrorCode::kCancelled) throw std::move(*python_error);
      throw;
    }
    if (python_error) throw std::move(*python_error);  // raised after a step that decode_when_stopped kept
    if (!c.written_prompt.empty()) {
      for (Image& im : r.images) im.parameters = infotext_with_prompt(im.parameters, c.params.prompt, c.written_prompt);
    }
    PyResult out(std::move(r));
    out.extra_warnings = c.warnings;
    return out;
  }

 private:
  std::unique_ptr<Pipeline> pipe_;
  std::string device_, device_line_, dtype_;
};

py::dict cpu_sample_dict(const sys::CpuSample& c) {
  py::dict d;
  d["cpu_util"] = c.cpu_util;
  d["ram_used"] = c.ram_used;
  d["ram_total"] = c.ram_total;
  d["process_rss"] = c.process_rss;
  return d;
}

py::list gpu_samples_list(const std::vector<sys::GpuSample>& gpus) {
  py::list out;
  for (const sys::GpuSample& g : gpus) {
    py::dict d;
    d["index"] = g.index;
    d["name"] = g.name;
    d["gpu_util"] = g.gpu_util;
    d["mem_util"] = g.mem_util;
    d["mem_used"] = g.mem_used;
    d["mem_total"] = g.mem_total;
    d["power_w"] = g.power_w;
    d["power_limit_w"] = g.power_limit_w;
    d["temperature_c"] = g.temperature_c;
    d["sm_clock_mhz"] = g.sm_clock_mhz;
    out.append(d);
  }
  return out;
}

// The models `diffuse models` lists, without reading weights or hashing:
// the demo model, then the Hugging Face cache, then the folders given.
py::list list_models(const std::vector<std::string>& dirs) {
  py::list out;
  auto add = [&](const std::string& name, const std::string& source, const std::string& path) {
    py::dict d;
    d["name"] = name;
    d["source"] = source;
    d["path"] = path;
    out.append(d);
  };
  if (auto demo = demo_model_path()) add("demo", "built-in", *demo);
  for (const hub::CachedModel& m : hub::scan_hf_cache(hub::HubOptions::from_env().cache_dir)) {
    if (m.is_diffusers && !m.snapshot.empty()) add(m.repo_id, "hf-cache", m.snapshot);
    for (const std::string& f : m.single_files) add(m.repo_id + ":" + fs::path(f).filename().string(), "hf-cache", f);
  }
  for (const std::string& dir : dirs) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const fs::path p = e.path();
      const std::string ext = p.extension().string();
      if (e.is_directory() && fs::exists(p / "model_index.json")) {
        add(p.filename().string(), "folder", p.string());
      } else if (e.is_regular_file() && (ext == ".safetensors" || ext == ".ckpt")) {
        add(p.stem().string(), "file", p.string());
      }
    }
  }
  return out;
}

}  // namespace
}  // namespace diffuse::python

PYBIND11_MODULE(_diffuse, m) {
  using namespace diffuse;
  using namespace diffuse::python;
  m.doc() = "Diffuse's native engine (use the `diffuse` package, not this module)";
  m.attr("__version__") = DIFFUSE_VERSION;

  static py::exception<Error> cancelled(m, "CancelledError", PyExc_RuntimeError);
  g_cancelled_error = cancelled.ptr();
  cancelled.attr("__doc__") =
      "A generation stopped by a callback's true return, a CancelToken or Pipeline.interrupt() (a RuntimeError)";
  cancelled.attr("__module__") = "diffuse";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      switch (e.code()) {
        case ErrorCode::kInvalidArgument: PyErr_SetString(PyExc_ValueError, e.what()); return;
        case ErrorCode::kNotFound: PyErr_SetString(PyExc_FileNotFoundError, e.what()); return;
        case ErrorCode::kCancelled: PyErr_SetString(g_cancelled_error, e.what()); return;
        case ErrorCode::kOutOfMemory: PyErr_SetString(PyExc_MemoryError, e.what()); return;
        default: PyErr_SetString(PyExc_RuntimeError, e.what()); return;
      }
    }
  });

  py::class_<PyResult>(m, "Result", "One generation's output (see diffuse.PipelineOutput)")
      .def_property_readonly("images", &PyResult::images, "uint8 arrays (height, width, 3), views of the engine's buffers")
      .def_property_readonly("seeds", &PyResult::seeds, "each image's seed")
      .def_property_readonly("infotexts", &PyResult::infotexts, "each image's A1111 parameters text")
      .def_property_readonly("decoded", &PyResult::decoded, "float32 (n, height, width, 3) in [0, 1], or None")
      .def_property_readonly("latents", &PyResult::latents, "final latents, float32 (n, 4, height/8, width/8)")
      .def_property_readonly("timings", &PyResult::timings, "seconds per stage and UNet evaluations")
      .def_property_readonly("seed", [](const PyResult& r) { return r.r().seed; }, "the call's seed")
      .def_property_readonly("stopped_at_step", [](const PyResult& r) { return r.r().stopped_at_step; },
                             "0, or the step a stopped run ended after")
      .def_property_readonly("steps_run", [](const PyResult& r) { return r.r().steps_run; }, "denoising steps taken")
      .def_property_readonly("vae_tiled", [](const PyResult& r) { return r.r().vae_tiled; }, "the VAE ran in tiles")
      .def_property_readonly("warnings", [](const PyResult& r) {
        std::vector<std::string> w = r.extra_warnings;
        w.insert(w.end(), r.r().warnings.begin(), r.r().warnings.end());
        return w;
      }, "what did not stop the run but is worth knowing");

  py::class_<PyPipeline, std::shared_ptr<PyPipeline>>(m, "Pipeline", "A loaded model (see diffuse.Pipeline)")
      .def_static("load", &PyPipeline::load, py::arg("model"), py::arg("device"), py::arg("dtype"),
                  py::arg("config_dir"), py::arg("prediction_type"),
                  "Loads a model: a path, 'demo' or '' (the demo model), an alias or a cached repo id")
      .def_property_readonly("info", &PyPipeline::info, "family, hash, defaults, device, dtype")
      .def_property_readonly("device", &PyPipeline::device, "the device it runs on: 'cpu' or 'cuda:N'")
      .def_property_readonly("device_line", &PyPipeline::device_line, "how the device was chosen")
      .def("generate", &PyPipeline::generate, py::arg("params"), py::arg("on_step"),
           "Runs one generation (the GIL is released while it computes)");

  m.def("devices", [] { return to_python(sys::devices_json(sys::cpu_info(), sys::cuda_devices())); },
        "The CPU and CUDA devices, as `diffuse devices --json` prints them");
  m.def("models", &list_models, py::arg("dirs") = std::vector<std::string>{},
        "The demo model, the Hugging Face cache's models and the folders' models");
  m.def("samplers", [] {
    std::vector<std::string> names;
    for (const SamplerSpec& s : sampler_catalog()) names.push_back(s.name);
    return names;
  }, "The sampler names");
  m.def("schedules", [] {
    std::vector<std::string> names;
    for (const ScheduleSpec& s : schedule_catalog()) names.push_back(s.name);
    return names;
  }, "The sigma schedule names");
  m.def("set_num_threads", [](int n) {
    DIFFUSE_CHECK_ARG(n > 0, "set_num_threads needs a positive count, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"), "CPU threads the engine uses");
  m.def("data_search_note", &data_search_note, "Where the package looks for its data");

  py::class_<sys::Telemetry, std::unique_ptr<sys::Telemetry>>(m, "Telemetry", "GPU (NVML) and CPU readings")
      .def(py::init([](const std::string& lib) { return sys::Telemetry::open(lib); }),
           py::arg("nvml_library") = "libnvidia-ml.so.1")
      .def_property_readonly("gpu_available", &sys::Telemetry::gpu_available)
      .def_property_readonly("gpu_unavailable_reason", &sys::Telemetry::gpu_unavailable_reason)
      .def("sample_gpus", [](sys::Telemetry& t) { return gpu_samples_list(t.sample()); })
      .def("sample_cpu", [](sys::Telemetry& t) { return cpu_sample_dict(t.sample_cpu()); });
}

// diffuse generate: text-to-image, img2img, inpainting and outpainting from the command line.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "adapters/library.h"
#include "cli/cli.h"
#include "cli/vae_option.h"
#include "cli/hires_flags.h"
#include "cli/progress_bar.h"
#include "cli/controlnet_flags.h"
#include "cli/ip_adapter_flags.h"
#include "cli/refiner_flags.h"
#include "core/thread_pool.h"
#include "hub/hub_cache.h"
#include "image/image_ops.h"
#include "io/file_io.h"
#include "io/png.h"
#include "pipeline/data_dir.h"
#include "pipeline/demo_model.h"
#include "pipeline/pipeline.h"
#include "sampling/sampler_catalog.h"
#include "sys/device_select.h"
#include "text/lora_tags.h"

namespace fs = std::filesystem;

namespace diffuse::cli {
namespace {

struct GenerateOptions {
  std::string model, prompt, prompt_positional, output, sampler, schedule = "default", rng = "cpu";
  std::string precision, device = "auto", config_dir, prediction;
  std::optional<std::string> negative_prompt;
  int steps = 0, width = 0, height = 0, images = 1, clip_skip = 1, threads = 0;
  float cfg_scale = -1.0f;
  std::optional<double> eta;  // TCD's gamma
  int64_t seed = -1;
  bool json = false;
  std::string original_size, crops, target_size;
  // Editing (img2img / inpainting / outpainting).
  std::string init_image, mask, resize_mode = "just-resize", inpaint_area = "whole", masked_content = "original",
                                outpaint;
  std::optional<double> strength;
  int mask_blur = 4, padding = 32;
  bool invert_mask = false, no_overlay = false;
  // LoRA and textual inversion (docs/adapters.md).
  std::vector<std::string> loras, lora_dirs, embedding_dirs, embeddings;
  std::string vae_tiling = "auto";
  std::string vae;                    // --vae (cli/vae_option.h)
  std::vector<std::string> vae_dirs;  // --vae-dir
  HiresFlags hires;  // docs/hires-fix.md
  RefinerFlags refiner;  // docs/refiner.md
  ControlNetFlags controlnet;  // docs/controlnet.md
  IpAdapterFlags ip_adapter;   // docs/ip-adapter.md
};

// The folders A1111 keeps under its root, here under the working directory.
constexpr const char* kDefaultLoraDir = "models/Lora";
constexpr const char* kDefaultEmbeddingsDir = "embeddings";

// --lora flags, then the prompt's <lora:...> tags, resolved to files: p.loras,
// and the prompt without its tags in p.prompt. Returns the prompt as written
// when tags were removed ("" otherwise). An unknown LoRA or a bad weight is
// Error(kInvalidArgument) naming it (exit 2), before any model is loaded.
std::string apply_loras(const GenerateOptions& o, GenerationParams& p) {
  AdapterLibraryOptions ao;
  ao.lora_dirs = o.lora_dirs.empty() ? std::vector<std::string>{kDefaultLoraDir} : o.lora_dirs;
  ao.embedding_dirs = o.embedding_dirs.empty() ? std::vector<std::string>{kDefaultEmbeddingsDir} : o.embedding_dirs;
  ao.allow_paths = true;
  ao.hf_snapshot = [](const std::string& repo) -> std::optional<std::string> {
    try {
      return hub::resolve_cached(repo, hub::HubOptions::from_env());
    } catch (const Error&) {
      return std::nullopt;
    }
  };
  AdapterLibrary library(ao);
  std::vector<LoraTag> tags;
  for (const std::string& spec : o.loras) tags.push_back(parse_lora_spec(spec));
  const PromptNetworks n = extract_extra_networks(p.prompt);
  tags.insert(tags.end(), n.loras.begin(), n.loras.end());
  for (const LoraTag& t : tags) {
    const std::string path = library.resolve_lora(t.name);
    p.loras.push_back({path, t.unet_weight, t.te_weight});
    std::fprintf(stderr, "lora: %s, text encoder %s, UNet %s (%s)\n", t.name.c_str(),
                 format_lora_weight(t.te_weight).c_str(), format_lora_weight(t.unet_weight).c_str(), path.c_str());
    for (const std::string& a : t.ignored) std::fprintf(stderr, "warning: %s: %s is not applied\n", t.text.c_str(), a.c_str());
  }
  for (const std::string& tag : n.skipped) {
    std::fprintf(stderr, "warning: %s is not applied: only <lora:...> and <lyco:...> tags are supported\n", tag.c_str());
  }
  if (p.negative_prompt) {
    for (const ExtraNetworkTag& t : find_extra_network_tags(*p.negative_prompt)) {
      if (t.network == "lora" || t.network == "lyco") {
        std::fprintf(stderr, "warning: the negative prompt's %s is not applied (LoRA tags work in the prompt only, as "
                     "in A1111)\n", t.text.c_str());
      }
    }
  }
  p.embedding_dirs = ao.embedding_dirs;
  p.embeddings = o.embeddings;
  if (n.prompt == p.prompt) return "";
  const std::string written = p.prompt;
  p.prompt = n.prompt;
  return written;
}

// A PNG file as an image / a mask (Error(kIo) naming the file when unreadable).
image::Rgb load_image(const std::string& path, const char* flag) {
  try {
    const std::shared_ptr<MappedFile> f = MappedFile::open(path);
    PngImage im = read_png(f->data(), f->size());
    return image::Rgb{im.width, im.height, std::move(im.rgb)};
  } catch (const Error& e) {
    throw_error(ErrorCode::kIo, std::string(flag) + " " + path + ": " + e.what());
  }
}

image::Gray load_mask(const std::string& path) {
  try {
    const std::shared_ptr<MappedFile> f = MappedFile::open(path);
    return image::decode_mask(f->data(), f->size(), image::MaskConvention::kLuminance);
  } catch (const Error& e) {
    throw_error(ErrorCode::kIo, "--mask " + path + ": " + e.what());
  }
}

// "1024x768" (W x H) -> {h, w} as diffusers orders size tuples.
std::array<int, 2> parse_size(const std::string& s, const char* flag) {
  int w = 0, h = 0;
  char x = 0;
  if (std::sscanf(s.c_str(), "%d%c%d", &w, &x, &h) != 3 || (x != 'x' && x != 'X') || w <= 0 || h <= 0) {
    throw_error(ErrorCode::kInvalidArgument, std::string(flag) + " expects WIDTHxHEIGHT, got '" + s + "'");
  }
  return {h, w};
}

std::array<int, 2> parse_pair(const std::string& s, const char* flag) {
  int a = 0, b = 0;
  if (std::sscanf(s.c_str(), "%d,%d", &a, &b) != 2 || a < 0 || b < 0) {
    throw_error(ErrorCode::kInvalidArgument, std::string(flag) + " expects TOP,LEFT, got '" + s + "'");
  }
  return {a, b};
}

std::vector<std::string> output_paths(const std::string& output, int n) {
  if (n == 1) return {output};
  fs::path p(output);
  std::string stem = (p.parent_path() / p.stem()).string();
  std::string ext = p.has_extension() ? p.extension().string() : ".png";
  std::vector<std::string> paths;
  for (int i = 1; i <= n; ++i) paths.push_back(stem + "-" + std::to_string(i) + ext);
  return paths;
}

int run_generate(const GenerateOptions& o) {
  install_signal_handlers();
  if (o.threads > 0) set_num_threads(o.threads);
  std::string prompt = !o.prompt.empty() ? o.prompt : o.prompt_positional;

  LoadOptions load;
  sys::parse_device_spec(o.device);  // a bad value is a usage error before anything else
  if (!o.precision.empty()) load.precision = precision_from_name(o.precision);
  if (!o.prediction.empty()) {
    if (o.prediction == "epsilon") {
      load.prediction = Prediction::kEpsilon;
    } else if (o.prediction == "v" || o.prediction == "v_prediction") {
      load.prediction = Prediction::kVPrediction;
    } else {
      throw_error(ErrorCode::kInvalidArgument, "--prediction must be epsilon or v_prediction");
    }
  }
  load.config_dir = o.config_dir;

  GenerationParams p;
  p.prompt = prompt;
  p.negative_prompt = o.negative_prompt;
  p.width = o.width;
  p.height = o.height;
  p.steps = o.steps;
  p.cfg_scale = o.cfg_scale;
  p.eta = o.eta;
  // Sampler and schedule names are usage errors (exit 2) listing the valid ones, before any model loads;
  // a schedule takes A1111's and ComfyUI's spellings too (automatic, ddim_uniform, ...).
  p.sampler = o.sampler.empty() ? std::string() : std::string(sampler_spec(o.sampler).name);
  const ScheduleSpec& schedule = schedule_spec(o.schedule);
  p.schedule = schedule.name;
  if (!p.sampler.empty() && !sampler_spec(p.sampler).supports(schedule.id)) {
    std::string allowed;
    for (const ScheduleSpec& sc : schedule_catalog())
      if (sampler_spec(p.sampler).supports(sc.id)) allowed += (allowed.empty() ? "" : ", ") + std::string(sc.name);
    throw_error(ErrorCode::kInvalidArgument, "the " + std::string(schedule.name) + " schedule is not available for --sampler " +
                                                 p.sampler + " (it runs with " + allowed + ")");
  }
  p.seed = o.seed;
  p.images = o.images;
  p.clip_skip = o.clip_skip;
  if (o.rng == "cpu") {
    p.rng = RngKind::kCpu;
  } else if (o.rng == "cuda" || o.rng == "gpu") {
    p.rng = RngKind::kCuda;
  } else {
    throw_error(ErrorCode::kInvalidArgument, "--rng must be cpu or cuda, got '" + o.rng + "'");
  }
  if (!o.original_size.empty()) p.original_size = parse_size(o.original_size, "--original-size");
  if (!o.target_size.empty()) p.target_size = parse_size(o.target_size, "--target-size");
  if (!o.crops.empty()) p.crops_coords_top_left = parse_pair(o.crops, "--crops-coords-top-left");
  p.vae_tiling = vae_tiling_from_name(o.vae_tiling);
  p.vae = resolve_vae_option(o.vae, o.vae_dirs.empty() ? std::vector<std::string>{kDefaultVaeDir} : o.vae_dirs);
  const bool editing = !o.init_image.empty();
  if (!editing && (!o.mask.empty() || !o.outpaint.empty() || o.strength)) {
    throw_error(ErrorCode::kInvalidArgument, "--mask, --outpaint and --strength need --init-image");
  }
  if (editing) {
    EditParams& e = p.edit;
    if (!o.outpaint.empty()) e.outpaint = image::parse_outpaint(o.outpaint);
    // Outpainting repaints a new area from nothing: the whole schedule by default.
    e.strength = o.strength.value_or(e.outpaint.any() ? 1.0 : 0.75);
    e.resize_mode = image::resize_mode_from_name(o.resize_mode);
    e.mask_blur = o.mask_blur;
    e.invert_mask = o.invert_mask;
    e.overlay = !o.no_overlay;
    e.masked_content = masked_content_from_name(o.masked_content);
    if (o.inpaint_area != "whole" && o.inpaint_area != "masked") {
      throw_error(ErrorCode::kInvalidArgument, "--inpaint-area must be whole or masked, got '" + o.inpaint_area + "'");
    }
    e.only_masked = o.inpaint_area == "masked";
    e.only_masked_padding = o.padding;
    DIFFUSE_CHECK_ARG(e.strength >= 0.0 && e.strength <= 1.0,
                      "--strength must be between 0 and 1, got " + std::to_string(e.strength));
    e.init_image = load_image(o.init_image, "--init-image");
    if (!o.mask.empty()) e.mask = load_mask(o.mask);
  }
  apply_hires_flags(o.hires, p);
  apply_refiner_flags(o.refiner, p);
  apply_controlnet_flags(o.controlnet, p);
  apply_ip_adapter_flags(o.ip_adapter, o.controlnet.dirs, p);
  const std::string written_prompt = apply_loras(o, p);
  p.validate();  // bad flags fail before a multi-GB model is loaded

  std::string model_path = resolve_model(o.model);
  const sys::DeviceChoice device = sys::select_device(o.device);
  std::fprintf(stderr, "%s\n", device.line.c_str());
  load.device = device.device;
  std::fprintf(stderr, "loading model %s\n", model_path.c_str());  // the phases (docs/playground.md)
  auto t_load = std::chrono::steady_clock::now();
  std::unique_ptr<Pipeline> pipe = Pipeline::load(model_path, load);
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  const ModelInfo& info = pipe->info();
  for (const std::string& w : info.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::fprintf(stderr, "model: %s (%s, %s, [%s]) loaded in %.2fs\n", info.name.c_str(), family_name(info.family),
               prediction_name(info.prediction), info.short_hash.c_str(), load_s);
  if (!info.kind.empty()) {  // a few-step model (pipeline/few_step.h): its defaults apply where flags are absent
    std::fprintf(stderr, "few-step model: %s (%s%s): defaults %d steps, cfg %g, sampler %s\n", info.kind.c_str(),
                 info.kind_guessed ? "guessed: " : "", info.kind_reason.c_str(), info.default_steps,
                 info.default_cfg, info.default_sampler.c_str());
  }
  load_refiner(o.refiner, *pipe, load, p);  // --refiner: the second model, beside the first

  ProgressBar bar("denoising");
  bar.phase(p.edit.active() ? "encoding prompt and image" : "encoding prompt");
  GenerationResult r = pipe->generate(p, [&](const StepProgress& s) {
    bar.update(s.step, s.total_steps);
    const bool stop = interrupted();
    if (s.step >= s.total_steps || stop) bar.phase("decoding");
    return stop;
  });
  bar.finish();
  bar.phase("saving");
  r.timings.load_s = load_s;
  if (!r.vae_name.empty()) std::fprintf(stderr, "vae: %s [%s] (%s)\n", r.vae_name.c_str(), r.vae_hash.c_str(), p.vae.c_str());
  for (const std::string& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  // The infotext keeps the prompt as written, tags included, as A1111's does.
  if (!written_prompt.empty()) {
    for (Image& im : r.images) im.parameters = infotext_with_prompt(im.parameters, p.prompt, written_prompt);
  }

  std::string output = o.output.empty() ? "diffuse-" + std::to_string(r.seed) + ".png" : o.output;
  std::vector<std::string> paths = output_paths(output, static_cast<int>(r.images.size()));
  for (size_t i = 0; i < r.images.size(); ++i) {
    const Image& im = r.images[i];
    fs::path parent = fs::path(paths[i]).parent_path();
    if (!parent.empty()) fs::create_directories(parent);
    write_png(paths[i], im.width, im.height, im.rgb.data(), {{"parameters", im.parameters}});
  }
  if (o.json) {
    nlohmann::json j;
    j["seed"] = r.seed;
    j["model"] = {{"name", info.name}, {"family", family_name(info.family)}, {"hash", info.short_hash},
                  {"prediction", prediction_name(info.prediction)}};
    for (size_t i = 0; i < r.images.size(); ++i) {
      j["images"].push_back({{"path", paths[i]}, {"seed", r.images[i].seed}, {"width", r.images[i].width},
                             {"height", r.images[i].height}, {"parameters", r.images[i].parameters}});
    }
    j["timings"] = {{"load_s", r.timings.load_s},         {"text_encode_s", r.timings.text_encode_s},
                    {"vae_encode_s", r.timings.vae_encode_s}, {"denoise_s", r.timings.denoise_s},
                    {"vae_decode_s", r.timings.vae_decode_s}, {"total_s", r.timings.total_s},
                    {"unet_evals", r.timings.unet_evals}};
    j["loras"] = nlohmann::json::array();
    for (const LoraRef& l : p.loras) {
      j["loras"].push_back({{"path", l.path}, {"unet_weight", l.unet_weight}, {"te_weight", l.te_weight}});
    }
    j["steps_run"] = r.steps_run;
    if (p.refiner.model) {
      const ModelInfo& ri = p.refiner.model->info();
      j["refiner"] = {{"name", ri.name}, {"hash", ri.short_hash}, {"switch_at", p.refiner.switch_at}};
    }
    j["vae_tiled"] = r.vae_tiled;
    if (!r.vae_name.empty()) j["vae"] = {{"name", r.vae_name}, {"hash", r.vae_hash}, {"path", p.vae}};
    j["warnings"] = r.warnings;
    std::cout << j.dump(2) << std::endl;
  } else {
    std::fprintf(stderr, "seed: %lld\n", static_cast<long long>(r.seed));
    for (const std::string& path : paths) std::cout << path << "\n";
    std::fprintf(stderr, "Time taken: %.2f s (text %.2f s, denoise %.2f s, VAE %.2f s)\n", r.timings.total_s,
                 r.timings.text_encode_s, r.timings.denoise_s, r.timings.vae_decode_s);
  }
  return kExitOk;
}

}  // namespace

Action add_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* c = app.add_subcommand(
      "generate", "Make images from a text prompt, or edit one (img2img, inpainting, outpainting)");
  const std::string examples =
      "Examples:\n"
      "  diffuse generate \"a red circle on the left, on a blue background\"   (built-in demo model)\n"
      "  diffuse generate --model ~/models/v1-5-pruned-emaonly.safetensors --prompt \"a red fox in snow\"\n"
      "  diffuse generate --model sd15 --prompt \"a castle\" --images 4 --sampler dpmpp_2m --schedule karras\n"
      "  diffuse generate --model sd15 --init-image photo.png --strength 0.6 --prompt \"an oil painting\"   (img2img)\n"
      "  diffuse generate --model sd15 --prompt \"a castle\" --hires 2x --hires-steps 15 --hires-denoise 0.5   (hires fix:\n"
      "      512 -> 1024; --hires-upscaler Latent (bicubic), Lanczos, an ESRGAN model, ...)\n"
      "  diffuse generate --model sd_xl_base_1.0.safetensors --refiner sd_xl_refiner_1.0.safetensors \\\n"
      "      --refiner-switch-at 0.8 --prompt \"a lighthouse at dusk\"   (SDXL base + refiner, docs/refiner.md)\n"
      "  diffuse generate --model sd15-inpainting.safetensors --init-image photo.png --mask mask.png \\\n"
      "      --prompt \"a red hat\"                    (inpainting: white = repaint; 4- or 9-channel models)\n"
      "  diffuse generate --model sd15 --init-image photo.png --outpaint left=128,right=128 --prompt \"a beach\"\n"
      "  diffuse generate --model sd15 --prompt \"a castle <lora:ink_style:0.8>, EasyNegative\"   (LoRA from\n"
      "      models/Lora/ink_style.safetensors; an embedding from embeddings/ by its file name)\n"
      "  diffuse generate --model sd15 --lora ink_style:0.8 --lora ~/detail.safetensors:0.5:1 --prompt \"a castle\"\n";
  c->footer(examples + sampler_help_text() +  // the sampler list comes from the catalogue
            "Several images are written as FILE-1.png ... FILE-N.png. Exit codes: 0 ok, 1 runtime error,\n"
            "2 usage error, 130 interrupted.");
  c->add_option("prompt_text", o->prompt_positional, "The prompt (same as --prompt)");
  c->add_option("-m,--model", o->model,
                "Model: a diffusers folder, a .safetensors/.ckpt file, a repo id in the Hugging Face cache, "
                "an alias (sd14, sd15, sd21, sdxl), or demo (default: demo, the built-in demo model)");
  c->add_option("-p,--prompt", o->prompt,
                "The prompt; A1111 syntax: (word:1.3), [word], BREAK, <lora:name:weight>, embedding names; >75 tokens ok");
  c->add_option("-n,--negative-prompt", o->negative_prompt, "What the image should not show");
  c->add_option("--steps", o->steps, "Denoising steps (default: 50; the demo model: 20; few-step models: their kind's, e.g. turbo 1, lcm 4)")->check(CLI::Range(1, 1000));
  c->add_option("--cfg-scale", o->cfg_scale, "Classifier-free guidance scale (default: 7.5; SDXL 5.0; <=1: off; turbo / lightning / hyper 0); "
                "an LCM-distilled UNet takes it as its guidance embedding (default 8), not as CFG");
  c->add_option("--sampler", o->sampler, "Sampler: " + sampler_names_list() + " (default: the model's scheduler)");
  c->add_option("--schedule", o->schedule, "Sigma schedule: " + schedule_names_list() + " (see Samplers below)");
  c->add_option("--eta", o->eta, "Stochasticity of the tcd sampler, TCD's gamma: 0 deterministic .. 1 (default: 0.3)")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("-W,--width", o->width, "Image width, a multiple of 8 (default: the model's native size: 512 SD1, 768 SD2-v, 1024 SDXL, 128 demo)");
  c->add_option("-H,--height", o->height, "Image height, a multiple of 8");
  c->add_option("-s,--seed", o->seed, "Seed; -1 picks a random one and prints it (default: -1)");
  c->add_option("--rng", o->rng, "Noise source: cpu (torch CPU generator) or cuda (torch CUDA Philox, A1111 'GPU')");
  c->add_option("--images", o->images, "Number of images, batched through the UNet together (default: 1)")
      ->check(CLI::Range(1, 64));
  c->add_option("--clip-skip", o->clip_skip, "Stop at the N-th last text encoder layer (default: 1)");
  c->add_option("--precision", o->precision, "fp32, bf16 or fp16 (default: fp32 on cpu, fp16 on cuda)");
  c->add_option("--device", o->device, sys::kDeviceHelp);
  c->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  c->add_option("--config", o->config_dir,
                "For a single-file checkpoint: a diffusers folder with its configs (default: the family's)");
  c->add_option("--prediction", o->prediction, "Override the prediction type: epsilon or v_prediction");
  c->add_option("--original-size", o->original_size, "SDXL micro-conditioning original size, WxH");
  c->add_option("--crops-coords-top-left", o->crops, "SDXL crop coordinates, TOP,LEFT (default 0,0)");
  c->add_option("--target-size", o->target_size, "SDXL target size, WxH");
  c->add_option("--init-image", o->init_image,
                "Edit this PNG instead of starting from noise (img2img; with --mask, inpainting). Without -W/-H the "
                "work size is the image's, rounded down to a multiple of 8");
  c->add_option("--strength", o->strength,
                "Denoising strength in [0,1]: the last int(steps x strength) steps run (diffusers' rule). 0 returns "
                "the image; default 0.75 (1.0 with --outpaint)");
  c->add_option("--resize-mode", o->resize_mode,
                "How the init image meets -W/-H: just-resize (stretch), crop (cover, centre crop), fill (fit, "
                "stretch the edges into the bars) (default: just-resize)");
  c->add_option("--mask", o->mask, "Inpainting mask PNG (L, RGB or RGBA): white = repaint, black = keep");
  c->add_option("--mask-blur", o->mask_blur, "Feathers the paste-back of the original, in pixels (default: 4)")
      ->check(CLI::Range(0, 256));
  c->add_flag("--invert-mask", o->invert_mask, "Repaint the black part of the mask instead");
  c->add_flag("--no-overlay", o->no_overlay,
              "Return the raw pipeline output (what diffusers returns) instead of pasting the original back "
              "outside the mask");
  c->add_option("--inpaint-area", o->inpaint_area,
                "whole (the whole picture) or masked (A1111 'only masked': the mask's region at full "
                "resolution, pasted back) (default: whole)");
  c->add_option("--padding", o->padding, "Pixels around the mask's region for --inpaint-area masked (default: 32)")
      ->check(CLI::Range(0, 4096));
  c->add_option("--masked-content", o->masked_content,
                "What a 4-channel model starts from under the mask: original, fill, noise (latent noise), nothing "
                "(latent nothing) (default: original)");
  c->add_option("--outpaint", o->outpaint,
                "Grow the canvas and paint the new area: left=N,right=N,top=N,bottom=N (or all=N), pixels");
  c->add_option("--lora", o->loras,
                "A LoRA / LyCORIS file: NAME[:W[:UNET_W]], the same as <lora:NAME:W[:UNET_W]> in the prompt (which "
                "works too). NAME: a file stem (or ss_output_name alias) under --lora-dir, searched recursively, a "
                "path, or a Hugging Face repo id in the local cache. W weights the text encoders and the UNet; a "
                "second number is the UNet's alone (A1111's order); te=X, unet=X name them (default 1). Repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--lora-dir", o->lora_dirs,
                std::string("Folder of LoRA files (.safetensors, .pt, .ckpt) that names are looked up in (default: ") +
                    kDefaultLoraDir + " in the working directory, as A1111); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--embeddings-dir", o->embedding_dirs,
                std::string("Folder of textual-inversion embeddings (.pt, .safetensors, .bin): a file's name in a "
                            "prompt uses it, as in A1111 (default: ") +
                    kDefaultEmbeddingsDir + " in the working directory); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--embedding", o->embeddings,
                "A textual-inversion file to know besides the folder's (its file name in a prompt uses it); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--vae-tiling", o->vae_tiling,
                 "Decode (and encode) in tiles: auto (only when the untiled decode would not fit in memory), on "
                 "(always: memory set by the tile, several times the VAE time) or off (default: auto; "
                 "docs/vae-tiling.md)");
  c->add_option("--vae", o->vae, kVaeHelp);
  c->add_option("--vae-dir", o->vae_dirs,
                "Folder where --vae looks a name up (default: models/VAE in the working directory); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  add_hires_flags(c, o->hires);
  add_refiner_flags(c, o->refiner);
  add_controlnet_flags(c, o->controlnet);
  add_ip_adapter_flags(c, o->ip_adapter);
  c->add_option("-o,--output", o->output, "Output PNG (default: diffuse-SEED.png)");
  c->add_flag("--json", o->json, "Print seeds, paths and timings as JSON on stdout");
  return [o, c]() -> int {
    if (o->prompt.empty() && o->prompt_positional.empty() && !c->count("--prompt")) {
      throw_error(ErrorCode::kInvalidArgument, "generate needs a prompt (--prompt TEXT)");
    }
    if (o->model.empty()) {
      if (!demo_model_path()) {
        throw_error(ErrorCode::kInvalidArgument,
                    "generate needs --model (a diffusers folder, a .safetensors/.ckpt file, a cached repo id or an "
                    "alias such as sd15; `diffuse models` lists what is available): the built-in demo model was "
                    "not found (" + data_search_note() + ")");
      }
      o->model = "demo";
      std::fprintf(stderr,
                   "no --model given: using the built-in demo model (a tiny SD 1.x trained by this project on "
                   "shapes and colours; pass --model for a Stable Diffusion checkpoint)\n");
    }
    return run_generate(*o);
  };
}

}  // namespace diffuse::cli

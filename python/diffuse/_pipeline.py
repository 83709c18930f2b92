"""diffuse.Pipeline: load a model, call it with a prompt (diffusers' API)."""
import operator
import os
import threading

from . import _diffuse, _images

_DTYPES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
}


def _dtype_name(dtype):
    """'fp16', 'float16', torch.float16 or numpy.float16 -> 'fp16' (None stays None)."""
    if dtype is None:
        return None
    name = getattr(dtype, "name", None) if not isinstance(dtype, str) else dtype
    if name is None:
        name = str(dtype)
    name = name.replace("torch.", "").lower()
    if name not in _DTYPES:
        raise ValueError(f"dtype must be fp32, fp16 or bf16 (or float32, float16, bfloat16), got {dtype!r}")
    return _DTYPES[name]


def _seed_of(generator):
    """An int seed from an int (numpy ints too), None (random) or a
    torch.Generator (its initial seed); anything else goes to the engine, which
    refuses it naming the parameter."""
    if generator is None or isinstance(generator, (bool, int)):
        return generator
    if hasattr(generator, "initial_seed"):
        return int(generator.initial_seed())
    if hasattr(generator, "__index__"):
        return operator.index(generator)
    return generator


class CancelToken:
    """Stops a generation from another thread: pass it as ``cancel=`` and call
    :meth:`cancel`; the call raises :class:`diffuse.CancelledError` after the
    step it is running. One token may serve several calls."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self):
        """Asks the calls holding this token to stop at their next step."""
        self._event.set()

    @property
    def cancelled(self):
        """True once :meth:`cancel` was called (until :meth:`reset`)."""
        return self._event.is_set()

    def reset(self):
        """Makes the token usable for a new call."""
        self._event.clear()


class PipelineOutput:
    """What a pipeline call returns.

    Attributes:
        images: PIL images (output_type="pil" with Pillow), uint8 numpy arrays
            of shape (height, width, 3) viewing the engine's buffers without a
            copy (output_type="uint8", or "pil" without Pillow), one float32
            array (n, height, width, 3) in [0, 1] (output_type="np", as
            diffusers), or the latents (output_type="latent").
        seeds: each image's seed.
        infotexts: each image's AUTOMATIC1111 parameters text (what a PNG
            written by ``diffuse generate`` carries); ``infotext`` is the first.
        latents: the final latents, float32 (n, 4, height/8, width/8).
        timings: seconds per stage ("text_encode_s", "denoise_s",
            "vae_decode_s", "total_s", ...) and "unet_evals".
        warnings: what did not stop the run but is worth knowing.
        steps_run, stopped_at_step: denoising steps taken; 0 or the step a
            stopped run ended after (decode_when_stopped=True).
    """

    def __init__(self, result, output_type):
        self._result = result
        if output_type == "latent":
            self.images = result.latents
        elif output_type == "np":
            self.images = result.decoded
        elif output_type == "uint8" or not _images.have_pillow():
            self.images = result.images
        else:
            self.images = [_images.to_pil(a, t) for a, t in zip(result.images, result.infotexts)]
        self.seeds = result.seeds
        self.infotexts = result.infotexts
        self.timings = result.timings
        self.warnings = result.warnings
        self.steps_run = result.steps_run
        self.stopped_at_step = result.stopped_at_step
        self.nsfw_content_detected = None  # diffusers' field: Diffuse has no safety checker

    @property
    def infotext(self):
        """The first image's AUTOMATIC1111 parameters text ("" when there is no image)."""
        return self.infotexts[0] if self.infotexts else ""

    @property
    def latents(self):
        """The final latents, float32 (n, 4, height/8, width/8)."""
        return self._result.latents

    @property
    def arrays(self):
        """The images as uint8 (height, width, 3) numpy views of the engine's buffers (no copy)."""
        return self._result.images

    def save(self, path):
        """Writes the images as PNG files with their parameters text (Pillow
        needed): ``path`` for one image, ``stem-1.png`` ... for several, as
        ``diffuse generate -o`` names them. Returns the paths."""
        if not _images.have_pillow():
            raise RuntimeError("PipelineOutput.save needs Pillow (apt install python3-pil)")
        from PIL import PngImagePlugin

        arrays, texts = self._result.images, self.infotexts
        stem, ext = os.path.splitext(path)
        paths = [path] if len(arrays) == 1 else [f"{stem}-{i + 1}{ext or '.png'}" for i in range(len(arrays))]
        for a, t, p in zip(arrays, texts, paths):
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", t)
            _images.to_pil(a, t).save(p, pnginfo=info)
        return paths

    def __repr__(self):
        return f"PipelineOutput(images={len(self.seeds)}, seeds={self.seeds})"


class Pipeline:
    """A loaded Stable Diffusion model (SD 1.x, SD 2.x, SDXL, or the built-in
    demo model). Make one with :meth:`from_pretrained`, then call it: one
    pipeline serves many calls, from several threads at once."""

    def __init__(self, native):
        self._native = native
        self._lock = threading.Lock()
        self._running = set()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, device="auto", dtype=None, *,
                        torch_dtype=None, config=None, prediction_type=None):
        """Loads a model.

        Args:
            pretrained_model_name_or_path: a diffusers folder, a .safetensors or
                .ckpt file, a repo id in the Hugging Face cache
                ("stable-diffusion-v1-5/stable-diffusion-v1-5"), an alias (sd14,
                sd15, sd21, sdxl; fetch with ``diffuse pull``), or None / "demo"
                for the built-in demo model. Nothing is downloaded.
            device: "auto" (the first usable CUDA GPU, else the CPU), "cpu",
                "cuda" or "cuda:N".
            dtype: "fp32", "fp16" or "bf16" (also "float16", torch.float16, ...);
                default fp32 on the CPU, fp16 on CUDA. ``torch_dtype`` is the
                same, under diffusers' name.
            config: for a single-file checkpoint, a diffusers folder with its configs.
            prediction_type: "epsilon" or "v_prediction", to override detection.

        Raises:
            FileNotFoundError: no such model. ValueError: a bad argument.
            RuntimeError: the model could not be read or run.
        """
        if dtype is not None and torch_dtype is not None:
            raise ValueError("give dtype or torch_dtype, not both")
        name = "" if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
        native = _diffuse.Pipeline.load(name, str(device), _dtype_name(dtype if dtype is not None else torch_dtype),
                                        "" if config is None else os.fspath(config), prediction_type)
        return cls(native)

    @property
    def info(self):
        """The model: name, path, family ("sd1", "sd2", "sdxl"), prediction,
        hash (A1111's short hash), sha256, defaults (width, height,
        num_inference_steps, guidance_scale, sampler), license, warnings,
        device and dtype."""
        return self._native.info

    @property
    def device(self):
        """The device it runs on: "cpu" or "cuda:N"."""
        return self._native.device

    def interrupt(self):
        """Stops every call of this pipeline that is running now (each raises
        diffuse.CancelledError after its current step)."""
        with self._lock:
            for token in self._running:
                token.cancel()

    def __call__(self, prompt="", negative_prompt=None, num_inference_steps=None, guidance_scale=None,
                 num_images_per_prompt=1, width=None, height=None, generator=None, sampler=None, schedule=None,
                 callback_on_step_end=None, *, image=None, mask_image=None, strength=None, latents=None,
                 output_type="pil", cancel=None, **kwargs):
        """Generates images (text-to-image; img2img with ``image``; inpainting
        with ``image`` and ``mask_image``). Unset values take the model's
        defaults (pipe.info["defaults"]).

        Args:
            prompt: the prompt (A1111 syntax: (word:1.3), [word], BREAK,
                <lora:name:weight>, embedding names), or a list of prompts (one
                image each, times num_images_per_prompt).
            negative_prompt: what the images should not show (a list with a list of prompts).
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance scale (<= 1: off).
            num_images_per_prompt: images, batched through the UNet together.
            width, height: image size, multiples of 8.
            generator: an int seed, a torch.Generator (its initial seed), or None (random).
            sampler: a name of diffuse.samplers() ("euler_a", "dpmpp_2m", ...).
            schedule: a name of diffuse.schedules() ("default", "karras").
            callback_on_step_end: ``f(step, total_steps, latents)`` called after
                every step (latents: float32 numpy array); returning True
                stops the run (diffuse.CancelledError).
            image: the image to edit (PIL image, uint8 array or PNG path): img2img.
            mask_image: white = repaint (PIL image, uint8 array or path): inpainting.
            strength: how much of the schedule an edit runs, in [0, 1] (default 0.75).
            latents: initial noise, float32 (n, 4, height/8, width/8), as diffusers.
            output_type: "pil" (default; numpy arrays when Pillow is missing),
                "uint8" (numpy views of the engine's buffers), "np" (float32,
                as diffusers) or "latent".
            cancel: a diffuse.CancelToken to stop the run from another thread.
            **kwargs: the engine's other parameters: rng ("cpu"|"cuda"),
                seed_per_image, clip_skip, vae, vae_tiling ("auto"|"on"|"off"),
                original_size, crops_coords_top_left, target_size (SDXL),
                resize_mode, mask_blur, invert_mask, masked_content,
                inpaint_full_res, inpaint_full_res_padding, overlay, outpaint
                ("left=128,right=128"), loras (["name:0.8", "path.safetensors"]),
                lora_dirs, embedding_dirs, embeddings, hires (dict: scale, steps,
                denoising_strength, upscaler, ...), refiner (a model path),
                refiner_switch_at, decode_when_stopped.

        Returns:
            PipelineOutput (images, seeds, infotexts, latents, timings, warnings).

        Raises:
            ValueError: a bad argument. diffuse.CancelledError: stopped by the
            callback, a CancelToken or :meth:`interrupt`. KeyboardInterrupt:
            Ctrl-C. RuntimeError: the engine failed.
        """
        if output_type not in ("pil", "uint8", "np", "latent"):
            raise ValueError(f"output_type must be 'pil', 'uint8', 'np' or 'latent', got {output_type!r}")
        params = dict(kwargs)
        if isinstance(prompt, (list, tuple)):
            if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
                raise ValueError(f"num_images_per_prompt must be a positive int, got {num_images_per_prompt!r}")
            # diffusers' order: each prompt's images together.
            params["prompt"] = [p for p in prompt for _ in range(num_images_per_prompt)]
            if negative_prompt is not None:
                if isinstance(negative_prompt, str):
                    negative_prompt = [negative_prompt] * len(prompt)
                if len(negative_prompt) != len(prompt):
                    raise ValueError(f"negative_prompt has {len(negative_prompt)} entries for {len(prompt)} prompts")
                params["negative_prompt"] = [n for n in negative_prompt for _ in range(num_images_per_prompt)]
        else:
            params["prompt"] = prompt
            params["negative_prompt"] = negative_prompt
            params["num_images_per_prompt"] = num_images_per_prompt
        params.update(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, width=width,
                      height=height, generator=_seed_of(generator), sampler=sampler, schedule=schedule,
                      strength=strength, latents=latents)
        if image is not None:
            params["image"] = _images.to_rgb_array(image, "image")
        if mask_image is not None:
            params["mask_image"] = _images.to_mask_array(mask_image, "mask_image")
        if output_type == "latent":
            params["output_latents"] = True
        params = {k: v for k, v in params.items() if v is not None}

        token = CancelToken()
        with self._lock:
            self._running.add(token)

        def on_step(step, total, latents_fn):
            if token.cancelled or (cancel is not None and cancel.cancelled):
                return True
            if callback_on_step_end is not None:
                # Only True stops: a diffusers-style callback returns a dict, which must not.
                return callback_on_step_end(step, total, latents_fn()) is True
            return False

        try:
            result = self._native.generate(params, on_step)
        finally:
            with self._lock:
                self._running.discard(token)
        return PipelineOutput(result, output_type)

    def __repr__(self):
        i = self.info
        return f"diffuse.Pipeline({i['name']!r}, family={i['family']}, device={i['device']}, dtype={i['dtype']})"

"""The module's API on the demo model: loading, info, outputs, parameters."""
import numpy as np

import diffuse
from conftest import PROMPT


def test_module_surface():
    assert diffuse.__version__
    for name in ("Pipeline", "PipelineOutput", "CancelToken", "CancelledError", "devices", "models", "monitor",
                 "Monitor", "samplers", "schedules", "set_num_threads"):
        assert hasattr(diffuse, name), name
        assert getattr(diffuse, name).__doc__, f"{name} has no docstring"
    for name in ("from_pretrained", "__call__", "interrupt"):
        assert getattr(diffuse.Pipeline, name).__doc__, name
    assert issubclass(diffuse.CancelledError, RuntimeError)


def test_info(pipe):
    info = pipe.info
    assert info["name"] == "demo"
    assert info["family"] == "sd1"
    assert len(info["hash"]) == 10 and len(info["sha256"]) == 64
    assert info["defaults"]["width"] == 128 and info["defaults"]["height"] == 128
    assert info["defaults"]["num_inference_steps"] == 20
    assert info["device"] == "cpu" and info["dtype"] == "fp32"
    assert pipe.device == "cpu"
    assert "demo" in repr(pipe)


def test_lists():
    d = diffuse.devices()
    assert "cpu" in d and "cuda" in d
    assert "euler_a" in diffuse.samplers() and "dpmpp_2m" in diffuse.samplers()
    assert "default" in diffuse.schedules() and "karras" in diffuse.schedules()
    names = [m["name"] for m in diffuse.models()]
    assert names[0] == "demo"


def test_text_to_image_uint8_views(pipe):
    out = pipe(PROMPT, num_inference_steps=4, generator=7, num_images_per_prompt=2, output_type="uint8")
    assert len(out.images) == 2 and out.seeds == [7, 7]
    for a in out.images:
        assert a.dtype == np.uint8 and a.shape == (128, 128, 3)
        # A view of the engine's buffer, owned through a capsule, not a copy.
        assert not a.flags.owndata and a.base is not None
        assert a.std() > 5  # a picture, not a flat colour
    assert not np.array_equal(out.images[0], out.images[1])  # one generator draws the batch: different noise
    # The same buffers come back from .arrays (no second copy made).
    assert np.shares_memory(out.arrays[0], out.images[0])
    assert out.infotext.startswith(PROMPT) and "Seed: 7" in out.infotext and "Steps: 4" in out.infotext
    assert out.timings["unet_evals"] == 4 and out.timings["total_s"] > 0
    assert out.steps_run == 4 and out.stopped_at_step == 0
    assert out.latents.shape == (2, 4, 16, 16) and out.latents.dtype == np.float32


def test_views_outlive_the_output(pipe):
    a = pipe(PROMPT, num_inference_steps=2, generator=3, output_type="uint8").images[0]
    b = pipe(PROMPT, num_inference_steps=2, generator=3, output_type="uint8").images[0]
    import gc
    gc.collect()
    assert np.array_equal(a, b)  # the first result's buffer is still alive and unchanged


def test_pil_output_and_save(pipe, tmp_path):
    from PIL import Image as PIL

    out = pipe(PROMPT, num_inference_steps=3, generator=11)
    im = out.images[0]
    assert isinstance(im, PIL.Image) and im.size == (128, 128) and im.mode == "RGB"
    assert np.array_equal(np.asarray(im), out.arrays[0])
    assert im.info["parameters"] == out.infotext
    paths = out.save(str(tmp_path / "one.png"))
    back = PIL.open(paths[0])
    assert back.text["parameters"] == out.infotext
    assert np.array_equal(np.asarray(back.convert("RGB")), out.arrays[0])


def test_np_and_latent_outputs(pipe):
    out = pipe(PROMPT, num_inference_steps=3, generator=5, output_type="np")
    assert out.images.shape == (1, 128, 128, 3) and out.images.dtype == np.float32
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0
    # The uint8 image is the float image rounded.
    assert np.abs(out.images[0] * 255 - out.arrays[0].astype(np.float32)).max() <= 0.5 + 1e-3
    lat = pipe(PROMPT, num_inference_steps=3, generator=5, output_type="latent")
    assert lat.images.shape == (1, 4, 16, 16)
    np.testing.assert_array_equal(lat.images, out.latents)


def test_same_seed_same_image_and_seed_changes_it(pipe):
    a = pipe(PROMPT, num_inference_steps=3, generator=21, output_type="uint8").images[0]
    b = pipe(PROMPT, num_inference_steps=3, generator=21, output_type="uint8").images[0]
    c = pipe(PROMPT, num_inference_steps=3, generator=22, output_type="uint8").images[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_random_seed_is_reported(pipe):
    out = pipe(PROMPT, num_inference_steps=2, output_type="uint8")
    again = pipe(PROMPT, num_inference_steps=2, generator=out.seeds[0], output_type="uint8")
    assert np.array_equal(out.images[0], again.images[0])


def test_torch_style_generator(pipe):
    class FakeGenerator:  # torch.Generator's interface for the seed
        def initial_seed(self):
            return 1234

    a = pipe(PROMPT, num_inference_steps=2, generator=FakeGenerator(), output_type="uint8")
    b = pipe(PROMPT, num_inference_steps=2, generator=np.int64(1234), output_type="uint8")
    assert a.seeds == [1234] and np.array_equal(a.images[0], b.images[0])


def test_prompt_list_and_images_per_prompt(pipe):
    out = pipe(["a red circle", "a green square"], negative_prompt="blurry", num_images_per_prompt=2,
               num_inference_steps=2, generator=1, output_type="uint8")
    assert len(out.images) == 4
    assert [t.split("\n")[0] for t in out.infotexts] == ["a red circle", "a red circle", "a green square",
                                                         "a green square"]


def test_sampler_schedule_size(pipe):
    out = pipe(PROMPT, num_inference_steps=3, generator=2, sampler="dpmpp_2m", schedule="karras", width=96,
               height=64, guidance_scale=5.0, output_type="uint8")
    assert out.images[0].shape == (64, 96, 3)
    assert "Sampler: DPM++ 2M" in out.infotext and "Schedule type: Karras" in out.infotext
    assert "CFG scale: 5" in out.infotext and "Size: 96x64" in out.infotext


def test_callback_sees_every_step(pipe):
    seen = []

    def cb(step, total, latents):
        seen.append((step, total, latents.shape, latents.dtype))
        return {"latents": latents}  # a diffusers-style return value does not stop the run (only True does)

    pipe(PROMPT, num_inference_steps=5, generator=3, callback_on_step_end=cb, output_type="uint8")
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5]
    assert all(s[1] == 5 and s[2] == (1, 4, 16, 16) and s[3] == np.float32 for s in seen)


def test_given_latents_fix_the_image(pipe):
    rng = np.random.default_rng(0)
    lat = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
    a = pipe(PROMPT, num_inference_steps=3, generator=1, latents=lat, output_type="uint8").images[0]
    b = pipe(PROMPT, num_inference_steps=3, generator=2, latents=lat, output_type="uint8").images[0]
    assert np.array_equal(a, b)  # euler_a-free default sampler: the seed only made the noise


def test_img2img(pipe):
    src = pipe(PROMPT, num_inference_steps=4, generator=9, output_type="uint8").images[0]
    zero = pipe(PROMPT, image=src, strength=0.0, num_inference_steps=4, generator=1, output_type="uint8")
    assert np.array_equal(zero.images[0], src)  # strength 0 returns the input unchanged
    edit = pipe("a yellow star in the centre, on a white background", image=src, strength=0.6,
                num_inference_steps=5, generator=1, output_type="uint8")
    assert edit.steps_run == 3  # int(5 * 0.6)
    assert edit.images[0].shape == src.shape and not np.array_equal(edit.images[0], src)
    assert "Denoising strength: 0.6" in edit.infotext


def test_inpainting_keeps_the_unmasked_part(pipe):
    src = pipe(PROMPT, num_inference_steps=4, generator=9, output_type="uint8").images[0]
    mask = np.zeros((128, 128), np.uint8)
    mask[32:96, 32:96] = 255
    out = pipe("a yellow star", image=src, mask_image=mask, strength=1.0, num_inference_steps=4, generator=4,
               mask_blur=0, output_type="uint8")
    img = out.images[0]
    outside = np.ones((128, 128), bool)
    outside[24:104, 24:104] = False  # the mask plus a latent cell of margin
    assert np.array_equal(img[outside], src[outside])  # pasted back (A1111's overlay)
    assert not np.array_equal(img[40:88, 40:88], src[40:88, 40:88])


def test_pil_and_path_inputs(pipe, tmp_path):
    from PIL import Image

    src = pipe(PROMPT, num_inference_steps=3, generator=9, output_type="uint8").images[0]
    Image.fromarray(src).save(tmp_path / "src.png")
    a = pipe(PROMPT, image=Image.fromarray(src), strength=0.5, num_inference_steps=4, generator=1,
             output_type="uint8").images[0]
    b = pipe(PROMPT, image=str(tmp_path / "src.png"), strength=0.5, num_inference_steps=4, generator=1,
             output_type="uint8").images[0]
    c = pipe(PROMPT, image=src, strength=0.5, num_inference_steps=4, generator=1, output_type="uint8").images[0]
    assert np.array_equal(a, c) and np.array_equal(b, c)


def test_monitor_samples():
    samples = list(diffuse.monitor(interval=0.05, count=2))
    assert len(samples) == 2
    for s in samples:
        assert s["cpu"]["ram_total"] > 0 and s["cpu"]["process_rss"] > 0
        assert isinstance(s["gpus"], list)
    with diffuse.Monitor(interval=0.05) as mon:
        pass
    summary = mon.summary()
    assert summary["samples"] >= 1 and summary["rss_max"] > 0


def test_hires_fix(pipe):
    out = pipe(PROMPT, num_inference_steps=3, generator=4, output_type="uint8",
               hires={"scale": 1.5, "steps": 2, "denoising_strength": 0.5, "upscaler": "Lanczos"})
    assert out.images[0].shape == (192, 192, 3)
    assert "Hires upscale: 1.5" in out.infotext and "Hires upscaler: Lanczos" in out.infotext

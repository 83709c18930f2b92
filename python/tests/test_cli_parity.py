"""The images equal the CLI's: `diffuse generate` with the same seed and
parameters writes the same pixels and the same parameters text."""
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import PROMPT


@pytest.mark.parametrize("args, kwargs", [
    ([], {}),  # the demo model's defaults: 20 steps, 128x128, its scheduler
    (["--steps", "6", "--sampler", "euler_a", "--cfg-scale", "5", "-n", "blurry", "--images", "2"],
     dict(num_inference_steps=6, sampler="euler_a", guidance_scale=5.0, negative_prompt="blurry",
          num_images_per_prompt=2)),
    (["--steps", "5", "--sampler", "dpmpp_2m", "--schedule", "karras", "-W", "96", "-H", "64"],
     dict(num_inference_steps=5, sampler="dpmpp_2m", schedule="karras", width=96, height=64)),
])
def test_python_images_equal_the_cli(pipe, diffuse_binary, tmp_path, args, kwargs):
    seed = 31337
    out_png = tmp_path / "cli.png"
    cmd = [diffuse_binary, "generate", "--device", "cpu", "--seed", str(seed), "-o", str(out_png), *args, PROMPT]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    py = pipe(PROMPT, generator=seed, output_type="uint8", **kwargs)
    n = len(py.images)
    paths = [out_png] if n == 1 else [tmp_path / f"cli-{i + 1}.png" for i in range(n)]
    for i, p in enumerate(paths):
        cli = Image.open(p)
        assert np.array_equal(np.asarray(cli.convert("RGB")), py.images[i]), f"image {i} differs from the CLI's"
        assert cli.text["parameters"] == py.infotexts[i]

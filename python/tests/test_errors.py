"""Errors become Python exceptions with the engine's message: ValueError for
bad arguments, FileNotFoundError for a missing model, diffuse.CancelledError
for a stopped run, RuntimeError for the rest; Ctrl-C is KeyboardInterrupt."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import diffuse
from conftest import PROMPT


def test_missing_model_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found: .*no-such-model"):
        diffuse.Pipeline.from_pretrained(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="not downloaded; fetch it with: diffuse pull"):
        diffuse.Pipeline.from_pretrained("someone/not-in-the-cache")


def test_bad_load_arguments_are_value_errors():
    with pytest.raises(ValueError, match="dtype must be fp32, fp16 or bf16"):
        diffuse.Pipeline.from_pretrained(dtype="int8")
    with pytest.raises(ValueError, match="tpu"):
        diffuse.Pipeline.from_pretrained(device="tpu")
    with pytest.raises(ValueError, match="prediction_type"):
        diffuse.Pipeline.from_pretrained(prediction_type="x0")


def test_corrupt_model_is_runtime_error(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(RuntimeError) as e:
        diffuse.Pipeline.from_pretrained(str(bad))
    assert "broken.safetensors" in str(e.value)
    assert not isinstance(e.value, (ValueError, FileNotFoundError))


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100), "multiple of 8"),
    (dict(num_inference_steps=0), "parameter 'num_inference_steps' must be positive"),
    (dict(height=-8), "parameter 'height' must be positive"),
    (dict(guidance_scale=-1.0), "guidance_scale"),
    (dict(guidance_scale="high"), "parameter 'guidance_scale' has the wrong type"),
    (dict(sampler="no_such_sampler"), "no_such_sampler"),
    (dict(schedule="sideways"), "sideways"),
    (dict(width="128"), "parameter 'width' must be an int, got str"),
    (dict(width=True), "parameter 'width' must be an int, got bool"),
    (dict(generator="seed"), "parameter 'generator' must be an int seed"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    (dict(strength=0.5), "need an image"),
    (dict(flux_capacitor=1), "unknown parameter\\(s\\): flux_capacitor"),
    (dict(output_type="jpeg"), "output_type"),
    (dict(rng="quantum"), "rng"),
    (dict(image=np.zeros((8, 8, 3), np.float32)), "uint8"),
    (dict(latents=np.zeros((1, 4, 16, 16), np.float64)), "float32"),
    (dict(loras=["no_such_lora_file:0.5"]), "no_such_lora_file"),
    (dict(hires={"scale": 2.0, "colour": 1}), "unknown key 'colour'"),
])
def test_bad_call_arguments_are_value_errors(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(PROMPT, num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)


def test_callback_stop_is_cancelled_error(pipe):
    steps = []

    def stop_at_2(step, total, latents):
        steps.append(step)
        return step == 2

    with pytest.raises(diffuse.CancelledError):
        pipe(PROMPT, num_inference_steps=6, generator=1, callback_on_step_end=stop_at_2)
    assert steps == [1, 2]
    # The pipeline is still usable.
    assert len(pipe(PROMPT, num_inference_steps=2, generator=1, output_type="uint8").images) == 1


def test_stop_with_decode_when_stopped_returns_partial_images(pipe):
    out = pipe(PROMPT, num_inference_steps=6, generator=1, decode_when_stopped=True, output_type="uint8",
               callback_on_step_end=lambda step, total, latents: step == 3)
    assert out.stopped_at_step == 3 and len(out.images) == 1


def test_callback_exception_propagates(pipe):
    class Boom(Exception):
        pass

    def cb(step, total, latents):
        raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        pipe(PROMPT, num_inference_steps=4, callback_on_step_end=cb)


def test_ctrl_c_raises_keyboard_interrupt_at_the_next_step(tmp_path):
    # A child process generates many steps; SIGINT arrives during step 1. The
    # run must stop at the next step boundary with KeyboardInterrupt.
    script = textwrap.dedent(f"""
        import sys, time, diffuse
        pipe = diffuse.Pipeline.from_pretrained(device="cpu")
        steps = []
        def cb(step, total, latents):
            steps.append(step)
            if step == 1:
                print("STEP1", flush=True)
                time.sleep(0.5)   # the parent's SIGINT lands here, inside the run
        t0 = time.time()
        try:
            pipe({PROMPT!r}, num_inference_steps=500, callback_on_step_end=cb)
            print("FINISHED")
        except KeyboardInterrupt:
            print("INTERRUPTED after steps", steps, "in", round(time.time() - t0, 2), flush=True)
            sys.exit(42)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=os.environ.copy())
    line = child.stdout.readline()
    assert line.strip() == "STEP1", child.stderr.read()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 42, (out, err)
    # The handler runs at the check after step 1's callback returned, or after step 2 at the latest.
    steps = eval(out.split("after steps")[1].split(" in ")[0])
    assert steps in ([1], [1, 2]), out

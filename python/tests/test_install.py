"""The installed package: `cmake --install` puts it under
<prefix>/$DIFFUSE_PYTHON_INSTALL_DIR/diffuse; moved elsewhere with its
prefix, it still finds its data (<prefix>/share/diffuse) and runs the demo
model, with no variable pointing at the build or source tree."""
import shutil
import subprocess
import sys
import textwrap

from conftest import required_env


def test_installed_package_runs_from_a_moved_prefix(tmp_path):
    build = required_env("DIFFUSE_BUILD_DIR")
    rel = required_env("DIFFUSE_PYTHON_INSTALL_DIR")
    r = subprocess.run(["cmake", "--install", build, "--prefix", str(tmp_path / "installed")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.move(tmp_path / "installed", tmp_path / "moved")
    prefix = tmp_path / "moved"
    site = prefix / rel
    assert (site / "diffuse" / "__init__.pyi").exists() and (site / "diffuse" / "py.typed").exists()
    script = textwrap.dedent("""
        import os, diffuse
        print(diffuse.__file__)
        print(os.environ["DIFFUSE_DATA_DIR"])
        pipe = diffuse.Pipeline.from_pretrained(device="cpu")
        print(pipe.info["path"])
        out = pipe("a red circle", num_inference_steps=2, generator=1, output_type="uint8")
        print(out.images[0].shape)
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONDONTWRITEBYTECODE": "1"}
    empty = tmp_path / "cwd"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=empty, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == str(site / "diffuse" / "__init__.py")
    assert lines[1] == str(prefix / "share" / "diffuse")
    assert lines[2] == str(prefix / "share" / "diffuse" / "models" / "demo")
    assert lines[3] == "(128, 128, 3)"

"""Executes examples/playground.ipynb headless (nbconvert's
ExecutePreprocessor: `jupyter nbconvert --to notebook --execute`, with the
ipywidgets 6 fix below) with this interpreter as the kernel, then checks the
executed notebook: no error output, the progress bar at the last step, and
the images it generated (PNG outputs of the demo model's size, not blank),
as many as its slider asked for.

    run_notebook.py NOTEBOOK OUTPUT_NOTEBOOK     (ctest: python_notebook)
"""
import base64
import io
import json
import os
import sys
import tempfile

import nbformat
import numpy as np
from nbconvert.preprocessors import ExecutePreprocessor
from PIL import Image


class Ipywidgets6ExecutePreprocessor(ExecutePreprocessor):
    """nbconvert's ExecutePreprocessor, able to run ipywidgets 6 notebooks.

    Debian 12's nbclient (0.7) mimics a front end for ipywidgets 7+: it reads
    the widget state from every "comm_open" message, and ipywidgets 6 (Debian
    12's python3-ipywidgets) sends that state in a later message, so plain
    `jupyter nbconvert --execute` stops with KeyError: 'state' at the first
    widget. A comm without state is left to the kernel here (nothing needs
    mimicking: only the Output widget does, and the playground has none)."""

    def on_comm_open_jupyter_widget(self, msg):
        if "state" not in msg["content"]["data"]:
            return None
        return super().on_comm_open_jupyter_widget(msg)


def main():
    notebook, executed = sys.argv[1], os.path.abspath(sys.argv[2])
    os.makedirs(os.path.dirname(executed), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # A kernelspec for this interpreter, whatever python3 is first on PATH.
        spec = os.path.join(tmp, "kernels", "diffuse-test")
        os.makedirs(spec)
        with open(os.path.join(spec, "kernel.json"), "w") as f:
            json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                       "display_name": "diffuse test", "language": "python"}, f)
        os.environ["JUPYTER_PATH"] = tmp + os.pathsep + os.environ.get("JUPYTER_PATH", "")
        nb = nbformat.read(notebook, as_version=4)
        ep = Ipywidgets6ExecutePreprocessor(timeout=600, kernel_name="diffuse-test")
        ep.preprocess(nb, {"metadata": {"path": os.path.dirname(os.path.abspath(notebook))}})
        nbformat.write(nb, executed)
    with open(executed) as f:
        nb = json.load(f)
    pngs, texts = [], []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                sys.exit("the notebook raised %s: %s" % (out["ename"], out["evalue"]))
            if out["output_type"] == "stream":
                texts.append("".join(out["text"]))
            if "image/png" in out.get("data", {}):
                pngs.append(out["data"]["image/png"])
    text = "".join(texts)
    print(text)
    if "progress bar: 20/20 steps" not in text:
        sys.exit("the progress bar did not follow the steps to 20/20")
    if "generated 4 images" not in text:
        sys.exit("the notebook did not report 4 generated images")
    if len(pngs) != 4:
        sys.exit(f"expected 4 PNG outputs, found {len(pngs)}")
    for i, data in enumerate(pngs):
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        if im.shape != (128, 128, 3):
            sys.exit(f"image {i}: shape {im.shape}, expected the demo model's 128x128")
        if im.std() < 5:
            sys.exit(f"image {i} is flat (std {im.std():.1f})")
    print(f"OK: {len(pngs)} images of 128x128 in {executed}")


if __name__ == "__main__":
    main()

"""Diffuse from Python: Stable Diffusion on Diffuse's C++ engine, with an API
that follows diffusers (docs/python.md).

    import diffuse
    pipe = diffuse.Pipeline.from_pretrained()          # the built-in demo model
    out = pipe("a red circle on the left, on a blue background", generator=1)
    out.images[0].save("circle.png")                   # PIL images (numpy arrays without Pillow)

The engine runs with the GIL released, so other Python threads keep running;
Ctrl-C stops a generation at the next step (KeyboardInterrupt). Errors are
ValueError (bad arguments), FileNotFoundError (no such model),
diffuse.CancelledError (stopped by a callback or a CancelToken) and
RuntimeError (anything else), with the engine's message.
"""
import os as _os


def _prepare_environment():
    # Where the package's data (models/demo, the CLIP tokenizer) lives: the
    # source tree for a build tree, <prefix>/share/diffuse once installed
    # (_paths.py, written by CMake). The engine reads $DIFFUSE_DATA_DIR
    # (src/pipeline/data_dir.h); a value the user set is kept.
    try:
        from . import _paths
        data = _paths.DATA_DIR
    except ImportError:  # pragma: no cover - a package copied without it
        data = None
    if data and not _os.environ.get("DIFFUSE_DATA_DIR") and _os.path.isdir(_os.path.join(data, "models")):
        _os.environ["DIFFUSE_DATA_DIR"] = data
    # oneDNN's OpenMP threads must sleep, not spin, while they wait (what the
    # `diffuse` program does for itself, src/cli/main.cpp): libgomp reads this
    # once, when the engine is loaded just below.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_prepare_environment()

from ._diffuse import (  # noqa: E402
    CancelledError,
    __version__,
    devices,
    models,
    samplers,
    schedules,
    set_num_threads,
)
from ._monitor import Monitor, monitor  # noqa: E402
from ._pipeline import CancelToken, Pipeline, PipelineOutput  # noqa: E402

__all__ = [
    "CancelToken",
    "CancelledError",
    "Monitor",
    "Pipeline",
    "PipelineOutput",
    "__version__",
    "devices",
    "models",
    "monitor",
    "samplers",
    "schedules",
    "set_num_threads",
]

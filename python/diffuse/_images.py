"""Images in and out of the engine: PIL images, numpy arrays and files."""
import os

import numpy as np

try:  # Pillow is optional: without it images come back as numpy arrays
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - depends on the machine
    _PILImage = None


def have_pillow():
    """True when Pillow imports (images come back as PIL.Image)."""
    return _PILImage is not None


def _open(path, what):
    if _PILImage is None:
        raise ValueError(f"{what}: reading the file {path!r} needs Pillow (apt install python3-pil); "
                         "or pass a numpy array")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: no such file: {path!r}")
    im = _PILImage.open(path)
    im.load()
    return im


def to_rgb_array(value, what="image"):
    """A PIL image, a file path or a uint8 array (H, W, 3|4) as a C-contiguous
    uint8 (H, W, 3) array (alpha dropped)."""
    if isinstance(value, (str, os.PathLike)):
        value = _open(os.fspath(value), what)
    if _PILImage is not None and isinstance(value, _PILImage.Image):
        return np.ascontiguousarray(np.asarray(value.convert("RGB")))
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8:
            raise ValueError(f"{what} must hold uint8 pixels (0-255), got dtype {value.dtype}")
        if value.ndim != 3 or value.shape[2] not in (3, 4):
            raise ValueError(f"{what} must have shape (height, width, 3) or (height, width, 4), got {value.shape}")
        return np.ascontiguousarray(value[:, :, :3])
    raise ValueError(f"{what} must be a PIL image, a numpy array or a file path, got {type(value).__name__}")


def to_mask_array(value, what="mask_image"):
    """A mask as uint8 (H, W): white (255) = repaint. RGB masks are turned to
    luminance as PIL's convert("L") does (ITU-R 601-2)."""
    if isinstance(value, (str, os.PathLike)):
        value = _open(os.fspath(value), what)
    if _PILImage is not None and isinstance(value, _PILImage.Image):
        return np.ascontiguousarray(np.asarray(value.convert("L")))
    if isinstance(value, np.ndarray):
        if value.dtype == bool:
            return np.ascontiguousarray(value.astype(np.uint8) * 255)
        if value.dtype != np.uint8:
            raise ValueError(f"{what} must hold uint8 values (0-255) or bools, got dtype {value.dtype}")
        if value.ndim == 2:
            return np.ascontiguousarray(value)
        if value.ndim == 3 and value.shape[2] in (3, 4):
            rgb = value[:, :, :3].astype(np.uint32)
            lum = (rgb[:, :, 0] * 299 + rgb[:, :, 1] * 587 + rgb[:, :, 2] * 114 + 500) // 1000
            return np.ascontiguousarray(lum.astype(np.uint8))
        raise ValueError(f"{what} must have shape (height, width) or (height, width, 3), got {value.shape}")
    raise ValueError(f"{what} must be a PIL image, a numpy array or a file path, got {type(value).__name__}")


def to_pil(array, infotext):
    """A PIL copy of a uint8 (H, W, 3) array, with its A1111 parameters in
    .info["parameters"] (PipelineOutput.save writes it as the PNG text chunk)."""
    im = _PILImage.fromarray(array, "RGB")
    im.info["parameters"] = infotext
    return im

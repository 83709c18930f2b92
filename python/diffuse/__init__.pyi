# Type stubs of the diffuse package (docs/python.md): what editors complete.
import os
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

try:
    from PIL.Image import Image as _PILImage
except ImportError:  # pragma: no cover
    _PILImage = Any  # type: ignore

__version__: str

_ImageInput = Union["_PILImage", npt.NDArray[np.uint8], str, os.PathLike]
_Dtype = Union[str, Any]  # "fp32" | "fp16" | "bf16", torch / numpy dtypes

class CancelledError(RuntimeError):
    """A generation stopped by a callback, a CancelToken or Pipeline.interrupt()."""

class CancelToken:
    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...
    def reset(self) -> None: ...

class PipelineOutput:
    images: Union[List["_PILImage"], List[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]
    seeds: List[int]
    infotexts: List[str]
    timings: Dict[str, float]
    warnings: List[str]
    steps_run: int
    stopped_at_step: int
    nsfw_content_detected: None
    @property
    def infotext(self) -> str: ...
    @property
    def latents(self) -> npt.NDArray[np.float32]: ...
    @property
    def arrays(self) -> List[npt.NDArray[np.uint8]]: ...
    def save(self, path: str) -> List[str]: ...

class Pipeline:
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Optional[Union[str, os.PathLike]] = None,
        device: str = "auto",
        dtype: Optional[_Dtype] = None,
        *,
        torch_dtype: Optional[_Dtype] = None,
        config: Optional[Union[str, os.PathLike]] = None,
        prediction_type: Optional[Literal["epsilon", "v_prediction"]] = None,
    ) -> "Pipeline": ...
    @property
    def info(self) -> Dict[str, Any]: ...
    @property
    def device(self) -> str: ...
    def interrupt(self) -> None: ...
    def __call__(
        self,
        prompt: Union[str, Sequence[str]] = "",
        negative_prompt: Optional[Union[str, Sequence[str]]] = None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        num_images_per_prompt: int = 1,
        width: Optional[int] = None,
        height: Optional[int] = None,
        generator: Optional[Union[int, Any]] = None,
        sampler: Optional[str] = None,
        schedule: Optional[str] = None,
        callback_on_step_end: Optional[Callable[[int, int, npt.NDArray[np.float32]], Any]] = None,
        *,
        image: Optional[_ImageInput] = None,
        mask_image: Optional[_ImageInput] = None,
        strength: Optional[float] = None,
        latents: Optional[npt.NDArray[np.float32]] = None,
        output_type: Literal["pil", "uint8", "np", "latent"] = "pil",
        cancel: Optional[CancelToken] = None,
        rng: Literal["cpu", "cuda"] = ...,
        seed_per_image: bool = ...,
        clip_skip: int = ...,
        vae: str = ...,
        vae_tiling: Literal["auto", "on", "off"] = ...,
        original_size: Tuple[int, int] = ...,
        crops_coords_top_left: Tuple[int, int] = ...,
        target_size: Tuple[int, int] = ...,
        resize_mode: Literal["just-resize", "crop", "fill"] = ...,
        mask_blur: int = ...,
        invert_mask: bool = ...,
        masked_content: Literal["original", "fill", "noise", "nothing"] = ...,
        inpaint_full_res: bool = ...,
        inpaint_full_res_padding: int = ...,
        overlay: bool = ...,
        outpaint: str = ...,
        loras: Sequence[str] = ...,
        lora_dirs: Sequence[str] = ...,
        embedding_dirs: Sequence[str] = ...,
        embeddings: Sequence[str] = ...,
        hires: Dict[str, Any] = ...,
        refiner: str = ...,
        refiner_switch_at: float = ...,
        aesthetic_score: float = ...,
        negative_aesthetic_score: float = ...,
        decode_when_stopped: bool = ...,
    ) -> PipelineOutput: ...

class Monitor:
    interval: float
    samples: List[Dict[str, Any]]
    def __init__(self, interval: float = 0.5, nvml_library: str = "libnvidia-ml.so.1") -> None: ...
    @property
    def gpu_available(self) -> bool: ...
    def __enter__(self) -> "Monitor": ...
    def __exit__(self, *exc: Any) -> bool: ...
    def summary(self) -> Dict[str, Any]: ...

def monitor(interval: float = 1.0, count: Optional[int] = None,
            nvml_library: str = "libnvidia-ml.so.1") -> Iterator[Dict[str, Any]]: ...
def devices() -> Dict[str, Any]: ...
def models(dirs: Sequence[str] = ...) -> List[Dict[str, str]]: ...
def samplers() -> List[str]: ...
def schedules() -> List[str]: ...
def set_num_threads(n: int) -> None: ...

"""Type stubs of the compiled part of movq (``movq._native``). Use the wrappers in ``movq``."""

from os import PathLike
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

__version__: str

Tile = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int], Tuple[int, int]]

class Progress:
    """Where a decode stands, after a stage finished."""

    call: int
    """The decoder call running (1-based): frame batches times tiles."""
    calls: int
    stage: str
    """The stage just finished: "mid", "level N" (N from the highest level down to 0), "out"."""
    flop_done: int
    flop_total: int
    @property
    def fraction(self) -> float: ...

class FrameStream:
    def __iter__(self) -> Iterator[Tuple[int, np.ndarray]]: ...
    def __next__(self) -> Tuple[int, np.ndarray]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "FrameStream": ...
    def __exit__(self, *exc: Any) -> bool: ...

class NativeDecoder:
    def __init__(
        self,
        weights: Union[str, PathLike[str]],
        *,
        config: Optional[Union[str, PathLike[str]]] = None,
        prefix: Optional[str] = None,
        precision: str = "f32",
        threads: Optional[int] = None,
        resolution: Optional[int] = None,
        pad_mode: Optional[str] = None,
        temporal_compress_times: Optional[int] = None,
        ignore: Sequence[str] = ...,
        decoder_class: Optional[str] = None,
        allow_nonfinite_output: bool = False,
    ) -> None: ...
    def config_json(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def scaling_factor(self) -> Optional[float]: ...
    @property
    def sample_size(self) -> Optional[Tuple[int, int]]: ...
    @property
    def config_source(self) -> str: ...
    @property
    def paths(self) -> list: ...
    @property
    def space_scale(self) -> int: ...
    @property
    def default_mode(self) -> str: ...
    def default_tile(self) -> Tile: ...
    def decoded_shape(
        self, shape: Sequence[int], *, mode: Optional[str] = None, tile: Optional[Tile] = None, layout: str = "bcthw"
    ) -> Tuple[int, int, int, int, int]: ...
    def estimate_memory(
        self, shape: Sequence[int], *, mode: Optional[str] = None, tile: Optional[Tile] = None, layout: str = "bcthw"
    ) -> int: ...
    def decode(
        self,
        z: np.ndarray,
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        bf16: bool = False,
        scale: Optional[float] = None,
        allow_nonfinite: bool = False,
        max_memory: Optional[float] = None,
        progress: Optional[Callable[[Progress], Any]] = None,
    ) -> np.ndarray: ...
    def trace(
        self,
        z: np.ndarray,
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        bf16: bool = False,
        scale: Optional[float] = None,
        modules: Sequence[str] = ...,
        crop_frames: Optional[Tuple[int, int]] = None,
        crop_rows: Optional[Tuple[int, int]] = None,
        crop_cols: Optional[Tuple[int, int]] = None,
        output: Optional[str] = None,
    ) -> Dict[str, np.ndarray]: ...
    def stream(
        self,
        z: np.ndarray,
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        bf16: bool = False,
        scale: Optional[float] = None,
        allow_nonfinite: bool = False,
        max_memory: Optional[float] = None,
        progress: Optional[Callable[[Progress], Any]] = None,
    ) -> FrameStream: ...
    def decode_to_file(
        self,
        z: np.ndarray,
        path: Union[str, PathLike[str]],
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        bf16: bool = False,
        scale: Optional[float] = None,
        allow_nonfinite: bool = False,
        max_memory: Optional[float] = None,
        progress: Optional[Callable[[Progress], Any]] = None,
        fps: int = 8,
        chroma: str = "420",
    ) -> list: ...

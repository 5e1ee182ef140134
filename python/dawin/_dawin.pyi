"""Type stubs of dawin's native module (python/src/lib.rs)."""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

PathLike = Union[str, "os.PathLike[str]"]
ArrayLike = Any  # anything numpy can view as float32: ndarray, CPU torch.Tensor

__version__: str

class Model:
    """A CLIP image classifier (or image tower) from any artefact dawin
    reads: safetensors, PyTorch .pt/.bin, HF or open_clip folders."""

    def __init__(
        self,
        path: PathLike,
        *,
        heads: Optional[int] = None,
        act: Optional[str] = None,
        device: str = "cpu",
        precision: str = "f32",
    ) -> None: ...
    @property
    def config(self) -> Dict[str, Any]:
        """width, layers, heads, act, ln_eps, patch, image_size, embed_dim,
        classes, and `settings`: each of heads/act/ln_eps with its source."""
    @property
    def notes(self) -> List[str]: ...
    @property
    def path(self) -> str: ...
    def forward(
        self, pixel_values: ArrayLike, *, batch_size: int = 64
    ) -> Dict[str, npt.NDArray[np.float32]]:
        """[N,3,S,S] images → {"image_embeds": [N,D], "logits": [N,C]}."""

def lambdas(
    logits_pt: ArrayLike,
    logits_ft: ArrayLike,
    rule: str = "entropy",
    temperature: Tuple[float, float] = (1.0, 1.0),
    labels: Optional[Sequence[int]] = None,
    seed: int = 1,
    t3_gamma: float = 0.5,
    t3_range: Tuple[float, float] = (0.0, 1.0),
) -> npt.NDArray[np.float32]:
    """λ per sample by one of `dawin eval`'s rules (default DaWin's
    λ = e^(−H_ft) / (e^(−H_pt) + e^(−H_ft))); t3_gamma and t3_range are
    the t3 rule's constants."""

def interpolated_forward(
    pretrained: Model,
    finetuned: Model,
    pixel_values: ArrayLike,
    lambdas: ArrayLike,
    *,
    batch_size: int = 64,
) -> npt.NDArray[np.float32]:
    """Each sample through its own merged model (1−λ)·θ_pt + λ·θ_ft:
    [N,C] logits."""

def evaluate(
    pretrained: Union[PathLike, Model],
    finetuned: Union[PathLike, Model],
    data: PathLike,
    *,
    methods: Union[str, Sequence[str], None] = None,
    interp: str = "exact",
    out_dir: Optional[PathLike] = None,
    device: str = "cpu",
    progress: Union[bool, Callable[[str, int, int], Any], None] = None,
    **flags: Any,
) -> Dict[str, Any]:
    """The run `dawin eval` makes: summary.json's content plus "lambdas",
    "indices" and "predictions" (method → ndarray). Flags in snake case:
    lambda_rule (alias expertise), temperature, wise_alpha, t3_gamma,
    t3_range, seed,
    bootstrap, batch_size, heads, act, precision, shard, expertise_from,
    class_subset, class_map, label_order, crop_border, save_components.
    progress: tqdm bars when tqdm is installed (None/True), none (False),
    or callback(what, done, total). Ctrl-C stops the run at its next safe
    point (KeyboardInterrupt); warnings arrive as dawin.errors.DawinWarning."""

def tokenize(texts: Sequence[str], context: int = 77) -> npt.NDArray[np.int32]: ...
def zeroshot(
    model: PathLike,
    classes: Union[PathLike, List[str]],
    templates: Union[PathLike, List[str], None] = None,
    *,
    device: str = "cpu",
) -> Model: ...

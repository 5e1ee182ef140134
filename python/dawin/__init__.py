"""dawin from Python: DaWin (training-free dynamic weight interpolation) for
CLIP image classifiers, on the same Rust engine as the `dawin` command.

    import dawin
    zs = dawin.Model("zeroshot.safetensors")
    ft = dawin.Model("finetuned.pt")
    out = ft.forward(pixel_values)                  # {"image_embeds", "logits"}
    lam = dawin.lambdas(zs_logits, ft_logits)       # λ per sample
    z = dawin.interpolated_forward(zs, ft, pixel_values, lam)
    result = dawin.evaluate("zs.safetensors", "ft.pt", "imagenet/val")
    result["methods"]["dawin"]["accuracy"]

Arrays go in as anything numpy views as float32 (numpy arrays, CPU torch
tensors) and come out as numpy arrays. The engine runs with the GIL
released. Errors are `dawin.errors` exceptions.
"""

from . import errors
from ._dawin import (
    Model,
    __version__,
    evaluate,
    interpolated_forward,
    lambdas,
    tokenize,
    zeroshot,
)
from .errors import (
    DawinError,
    DawinWarning,
    FileMissingError,
    InvalidInputError,
    OutOfDeviceMemoryError,
)

__all__ = [
    "DawinError",
    "DawinWarning",
    "FileMissingError",
    "InvalidInputError",
    "Model",
    "OutOfDeviceMemoryError",
    "__version__",
    "errors",
    "evaluate",
    "interpolated_forward",
    "lambdas",
    "tokenize",
    "zeroshot",
]

"""Mixed precision and memory layout of the networks a stage trains or applies.

`Precision("bf16")` runs forward passes under torch's bfloat16 autocast (convolutions and
matrix products in bf16, reductions and normalisations in float32, as autocast chooses) and
hands their outputs back as float32, so losses, metrics and images are always computed in
float32. bf16 keeps float32's exponent range: no loss scaling is needed. `channels_last`
stores 4-D activations NHWC, the layout GPU convolution kernels prefer; it changes speed, not
what is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Precision:
    """How the forward passes run: `dtype` 'fp32' or 'bf16' (autocast), and the layout."""

    dtype: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise ValueError(f"precision {self.dtype!r}: expected one of {PRECISIONS}")

    @property
    def bf16(self) -> bool:
        return self.dtype == "bf16"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` in this layout (in place, as Module.to does); returns it."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A 4-D batch in this layout (other tensors unchanged)."""
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self, device: torch.device | str) -> torch.autocast:
        """The autocast context for forward passes on `device` (disabled for fp32)."""
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=self.bf16)

    def forward(self, model: torch.nn.Module, *inputs: torch.Tensor):
        """model(*inputs) under `autocast`, inputs in this layout; floating outputs (a tensor
        or a tuple of them) as float32, others as they are."""
        with self.autocast(inputs[0].device):
            out = model(*(self.layout(x) for x in inputs))
        return _as_float32(out)


def _as_float32(out):
    if isinstance(out, tuple):
        return tuple(_as_float32(o) for o in out)
    return out.float() if torch.is_tensor(out) and out.is_floating_point() else out


FP32 = Precision()

"""bf16 Linear layers whose weights oneDNN packs once, at load time.

A bf16 ``nn.Linear`` hands oneDNN the plain (out, in) weight on every call, and oneDNN reorders it
into its blocked layout each time. Packed once (``torch.ops.mkldnn._reorder_linear_weight``, then
``_linear_pointwise``: what torch.compile's freezing does for bf16 Linear layers on CPU), the NER
model gave the same probabilities bit for bit on the 2,699 windows of 100 PolNeAR train texts, and
the stance model on 2,931 of their sentences but one, whose logits moved by 0.023 (no label
changed); on other text a probability may move in its last bits (oneDNN sums in another order).
The pipeline's passes over those texts, plain and packed in alternating rounds on a noisy 2-core AMX
VM (``python -m bench.packed``): medians of 1.02x to 1.11x (NER) and 1.09x to 1.10x (stance) in two
sessions (bench/RESULTS.md "Packed bf16 weights"). Fusing GELU or the residual add into the Linear
layers as well added nothing there.

The two ops are torch's own but private; torch is pinned (pyproject.toml), and where they are
missing or disagree with ``nn.Linear`` on a probe, the model keeps its Linear layers.
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import nn

LOG = logging.getLogger(__name__)


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward with the weight in oneDNN's layout. Keeps ``in_features`` and
    ``out_features``, which the bench's FLOP count reads."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # plain attributes, not parameters: an opaque oneDNN tensor has no storage to copy or save
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def unpacked(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           dtype=self.packed_weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.packed_weight.to_dense())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def __deepcopy__(self, memo: dict) -> "PackedLinear":
        return PackedLinear(self.unpacked())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@functools.cache
def can_pack() -> bool:
    """Whether this torch has the ops, and a packed layer computes what nn.Linear computes (probed
    once a process: every bf16 model and every fused layer of the benches asks)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        linear = nn.Linear(64, 32).to(torch.bfloat16)
        x = torch.randn(2, 5, 64, generator=generator).to(torch.bfloat16)
        with torch.inference_mode():
            return torch.equal(PackedLinear(linear)(x), linear(x))
    except (RuntimeError, NotImplementedError) as error:  # an op that exists but has no kernel here
        LOG.info("oneDNN packed Linear layers unavailable: %s", error)
        return False


def pack_linear_layers(model: nn.Module) -> int:
    """Replace every bf16 ``nn.Linear`` of ``model`` in place with a :class:`PackedLinear`; returns
    how many were replaced (0 where :func:`can_pack` says no)."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is nn.Linear and child.weight.dtype == torch.bfloat16]
    if not targets or not can_pack():
        return 0
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear(child))
    return len(targets)

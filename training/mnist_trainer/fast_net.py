"""The example's Net, computed faster: same parameters, same state_dict, same function.

FastNet changes only how Net's forward is evaluated, never what it computes:
- max pooling runs before the ReLU: max and ReLU commute (ReLU is monotonic), so the values and
  the gradients are the same, and the ReLU touches a quarter of the elements;
- dropout multiplies by a keep mask made from random bits instead of one Bernoulli draw per
  element (on CPU that draw costs more than conv2); for the example's p (0.25, 0.5), and any
  multiple of 1/128, the keep probability is exact, other p draw floats as torch does;
- the pooled activations are flattened in Net's (channel, row, column) order, with the gradient
  handed back in channels_last, so max pooling's backward stays on its fast path;
- with compiled kernels (native.py), max pooling, ReLU, dropout and the flatten are one pass
  forward and one backward (kernels.c), from the same random bits as keep_mask, with a uint8
  window index instead of max_pool2d's int64 one. The same values and gradients.

A state_dict trained here loads into Net, and the other way round.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .model import Net


def keep_mask(shape, p: float, device: torch.device) -> torch.Tensor:
    """uint8 tensor of shape, each element 1 with probability 1 - p (else 0), from torch's generator.

    Where p is a multiple of 1/2**bits for some bits <= 7 (the example's 0.25 and 0.5 are), each
    element takes `bits` random bits: field >= p * 2**bits exactly when (field + 2**bits - level)
    carries into bit `bits`. Integer shifts, no float draw and no bool tensor (both slow on CPU).
    Element i takes its field from byte i % nbytes, at bit (i // nbytes) * bits (kernels.c reads
    the same bytes the same way).
    """
    numel = 1
    for size in shape:
        numel *= size
    level = _level(p)
    if level is not None and device.type == "cpu":
        try:
            bits, level = level
            raw = random_bytes(numel, bits, device)
            shifts = torch.arange(0, (8 // bits) * bits, bits, dtype=torch.uint8, device=device).unsqueeze(1)
            fields = (raw.unsqueeze(0) >> shifts) & ((1 << bits) - 1)
            return ((fields + ((1 << bits) - level)) >> bits).view(-1)[:numel].view(shape)
        except (RuntimeError, TypeError):  # a torch without size-changing dtype views
            pass
    return (torch.rand(shape, device=device) >= p).to(torch.uint8)


def random_bytes(numel: int, bits: int, device: torch.device) -> torch.Tensor:
    """Enough random uint8 bytes for numel fields of `bits` bits, drawn as int64 words (fast)."""
    nbytes = -(-numel // (8 // bits))
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, (-(-nbytes // 8),), dtype=torch.int64, device=device)
    return words.view(torch.uint8)[:nbytes]


def _level(p: float):
    """(bits, p * 2**bits) for the fewest bits <= 7 that make it whole, else None."""
    for bits in range(1, 8):
        level = p * (1 << bits)
        if level == int(level) and 0 < level < (1 << bits):
            return bits, int(level)
    return None


def relu_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout(F.relu(x), p, training): ReLU, then a multiply by the scaled keep mask."""
    if not training or p == 0:
        return F.relu(x)
    if p >= 1:  # as F.dropout: everything dropped, the graph kept
        return F.relu(x) * 0.0
    with torch.no_grad():
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            # draw the mask in memory order, then view it with x's (N, C, H, W) strides
            n, c, h, w = x.shape
            keep = keep_mask((n, h, w, c), p, x.device).permute(0, 3, 1, 2)
        else:
            keep = keep_mask(x.shape, p, x.device)
        mask = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
    return F.relu(x) * mask


class _ContiguousGradChannelsLast(torch.autograd.Function):
    """x.contiguous() whose gradient goes back channels_last, the layout x came in."""

    @staticmethod
    def forward(ctx, x):  # pylint: disable=arguments-differ
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        return grad.contiguous(memory_format=torch.channels_last)


def flatten_nchw(x: torch.Tensor) -> torch.Tensor:
    """torch.flatten(x, 1) in Net's element order, for x in either memory format."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        x = _ContiguousGradChannelsLast.apply(x)
    return torch.flatten(x, 1)


class _NativePoolReluDropout(torch.autograd.Function):
    """flatten(dropout(relu(max_pool2d(x, 2)), p), 1) by kernels.c, x channels_last."""

    @staticmethod
    def forward(ctx, x, kernels, random, bits, level, scale):  # pylint: disable=arguments-differ
        y, code = kernels.pool_relu_dropout(x, random, bits, level, scale)
        ctx.save_for_backward(code)
        ctx.kernels, ctx.scale, ctx.shape, ctx.dtype = kernels, scale, tuple(x.shape), x.dtype
        return y

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        (code,) = ctx.saved_tensors
        grad_x = ctx.kernels.pool_relu_dropout_backward(grad, code, ctx.scale, ctx.shape, ctx.dtype)
        return grad_x, None, None, None, None, None


def native_pool_relu_dropout(kernels, x: torch.Tensor, p: float, training: bool):
    """flatten(relu_dropout(max_pool2d(x, 2)), 1) in one kernel, or None where it does not apply."""
    if not kernels.pool_fits(x):
        return None
    if not training or p == 0:
        return _NativePoolReluDropout.apply(x, kernels, None, 1, 0, 1.0)
    level = _level(p)
    if level is None:
        return None
    bits, level = level
    n, c, h, w = x.shape
    random = random_bytes(n * (h // 2) * (w // 2) * c, bits, x.device)
    # the survivors' factor rounded to x's dtype, as relu_dropout's mask is
    scale = torch.ones((), dtype=x.dtype).mul_(1.0 / (1.0 - p)).item()
    return _NativePoolReluDropout.apply(x, kernels, random, bits, level, scale)


class FastNet(Net):
    """Net with the forward reordered as described above; parameters and outputs are Net's.

    kernels: a native.Kernels for the fused CPU pass, or None for torch's operations."""

    def __init__(self, kernels=None):
        super().__init__()
        self.kernels = kernels

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.conv2(x)
        pooled = None
        if self.kernels is not None:
            pooled = native_pool_relu_dropout(self.kernels, x, self.dropout1.p, self.training)
        if pooled is None:
            pooled = flatten_nchw(relu_dropout(F.max_pool2d(x, 2), self.dropout1.p, self.training))
        x = pooled
        x = relu_dropout(self.fc1(x), self.dropout2.p, self.training)
        return F.log_softmax(self.fc2(x), dim=1)

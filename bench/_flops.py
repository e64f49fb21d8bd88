"""FLOPs per training sample of the MNIST Net, counted from its layer shapes (not guessed)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from mnist_trainer.model import Net  # noqa: E402


def forward_flops_per_sample() -> int:
    """Multiply-adds x 2 of the conv and linear layers for one 1x28x28 image (the rest is tiny)."""
    net = Net()
    total = 0
    hooks = []

    def conv_hook(module, _inputs, output):
        nonlocal total
        kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        total += 2 * kernel * output[0].numel()

    def linear_hook(module, _inputs, output):
        nonlocal total
        total += 2 * module.in_features * output[0].numel()

    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return total


def training_flops_per_sample() -> int:
    """Forward + backward: the backward pass costs about twice the forward (grad input + grad weight)."""
    return 3 * forward_flops_per_sample()

"""The training step and the evaluation: the example's loop, fed from in-memory tensors."""
from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.data.distributed import DistributedSampler

from .runtime import autocast, inference_mode


def epoch_order(num_samples: int, epoch: int, seed: int, world_size: int, rank: int, device) -> torch.Tensor:
    """This rank's sample indices for an epoch: a seeded shuffle that depends only on (seed, epoch),
    so a resumed run sees the same order. DistributedSampler gives each rank its own share."""
    sampler = DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank,
                                 shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long).to(device)


def train_step(model, optimizer, data, target, device, amp: bool) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        output = model(data)
        loss = F.nll_loss(output, target)
    loss.backward()
    optimizer.step()
    return loss.detach()


def evaluate(model, images, labels, batch_size: int, device, amp: bool):
    """(average NLL loss, accuracy) over the whole test set."""
    model.eval()
    with inference_mode(), autocast(device, amp):
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for start in range(0, len(images), batch_size):
            data, target = images[start:start + batch_size], labels[start:start + batch_size]
            output = model(data).float()
            loss_sum += F.nll_loss(output, target, reduction="sum")
            correct += (output.argmax(dim=1) == target).sum()
    model.train()
    return loss_sum.item() / len(images), correct.item() / len(images)

"""The training step and the evaluation: the example's loop, fed from in-memory tensors."""
from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.data.distributed import DistributedSampler

from .runtime import autocast, inference_mode

# Images per forward when evaluating on the CPU. A 1,000-image batch (the example's test batch)
# makes 37-74 MB activations: past glibc's largest mmap threshold (32 MB), each is mapped and
# page-faulted anew, and none fits in cache. 200 at a time evaluates twice as fast, same results.
CPU_EVAL_SLICE = 200


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
    """(average NLL loss, accuracy) over the whole test set, batch_size images at a time (at most
    CPU_EVAL_SLICE on the CPU)."""
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_EVAL_SLICE)
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

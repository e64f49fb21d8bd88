"""The baseline: pytorch/examples mnist/main.py as its users run it today, plus timing.

Followed exactly (main branch of pytorch/examples, mnist/main.py):
- the same Net (conv 1->32, conv 32->64, max-pool, dropout 0.25, fc 9216->128, dropout 0.5, fc 128->10,
  log_softmax), torch.manual_seed(seed) before building it;
- datasets.MNIST with transforms.Compose([ToTensor(), Normalize((0.1307,), (0.3081,))]) applied per
  sample, read through torch.utils.data.DataLoader with batch_size 64 (train) / 1000 (test);
- train_kwargs get {'num_workers': 1, 'persistent_workers': True, 'pin_memory': True, 'shuffle': True}
  only when an accelerator is used; on the CPU the loaders have no workers and no shuffling;
- Adadelta(lr=1.0) (the example spells the import `import torch.optim as optim`), StepLR(step_size=1, gamma=0.7) stepped after each epoch's test;
- train(): zero_grad, forward, nll_loss, backward, step, a loss.item() print every log_interval (10)
  batches; test(): no_grad, summed nll_loss, argmax accuracy.
Changed, only around the recipe: the data root is an argument (the example hard-codes '../data'
with download=True), the Net is imported from the trainer (it is the example's Net verbatim), and
each epoch prints one machine-readable line `REFERENCE {json}` with its timings. The per-batch log
lines are collected but not printed, so the terminal does not slow the baseline down.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import optim
from torch.optim.lr_scheduler import StepLR
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from mnist_trainer.model import Net  # noqa: E402  (the example's Net, verbatim)


def train(args, model, device, train_loader, optimizer, epoch, log):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    return test_loss, correct / len(test_loader.dataset)


def main():
    parser = argparse.ArgumentParser(description='pytorch/examples MNIST, timed (benchmark baseline)')
    parser.add_argument('--data-dir', required=True)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--test-batch-size', type=int, default=1000)
    parser.add_argument('--epochs', type=int, default=14)
    parser.add_argument('--lr', type=float, default=1.0)
    parser.add_argument('--gamma', type=float, default=0.7)
    parser.add_argument('--no-accel', action='store_true')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--log-interval', type=int, default=10)
    args = parser.parse_args()

    use_accel = not args.no_accel and torch.accelerator.is_available()
    torch.manual_seed(args.seed)
    if use_accel:
        device = torch.accelerator.current_accelerator()
    else:
        device = torch.device("cpu")

    started = time.perf_counter()
    train_kwargs = {'batch_size': args.batch_size}
    test_kwargs = {'batch_size': args.test_batch_size}
    if use_accel:
        accel_kwargs = {'num_workers': 1, 'persistent_workers': True, 'pin_memory': True, 'shuffle': True}
        train_kwargs.update(accel_kwargs)
        test_kwargs.update(accel_kwargs)
    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,))
    ])
    dataset1 = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    dataset2 = datasets.MNIST(args.data_dir, train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
    test_loader = torch.utils.data.DataLoader(dataset2, **test_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    setup_seconds = time.perf_counter() - started
    print("REFERENCE " + json.dumps({"setup_seconds": round(setup_seconds, 3), "device": str(device),
                                     "threads": torch.get_num_threads()}), flush=True)
    for epoch in range(1, args.epochs + 1):
        log = []
        t0 = time.perf_counter()
        train(args, model, device, train_loader, optimizer, epoch, log)
        if use_accel:
            torch.accelerator.synchronize()
        t1 = time.perf_counter()
        test_loss, accuracy = test(model, device, test_loader)
        t2 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        print("REFERENCE " + json.dumps({
            "epoch": epoch, "accuracy": accuracy, "test_loss": test_loss,
            "train_seconds": t1 - t0, "seconds": t2 - t0,
            "samples_per_s": len(dataset1) / (t1 - t0), "lr": lr}), flush=True)


if __name__ == '__main__':
    main()

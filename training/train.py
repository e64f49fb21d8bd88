"""Train the pytorch/examples MNIST model with its recipe (Net, Adadelta, StepLR), ready for the cloud.

Around the example: the data decoded once into tensors on the device (a batch is a slice, no
DataLoader), mixed precision chosen from the hardware, a checkpoint every epoch with exact resume, a
clean stop on SIGTERM (exit 75), DistributedDataParallel under torchrun, metrics and a plot.
"""
import math
import signal
import sys
import time

import torch
import torchvision
from torch.nn import functional as F
from torch.optim.lr_scheduler import StepLR
from torch.utils.data.distributed import DistributedSampler

from mnist_trainer import checkpoint as ckpt, data, report
from mnist_trainer.device import World, autocast, device_precision, pick_device
from mnist_trainer.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_FAILURE, EXIT_OK, EXIT_PREEMPTED, BadInput
from mnist_trainer.model import Net
from mnist_trainer.options import ensure_writable, parse_args


def train_step(model, optimizer, scaler, images, labels, amp: str) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    with autocast(images.device, amp):
        loss = F.nll_loss(model(images), labels)
    scaler.scale(loss).backward()  # the scaler does nothing unless amp is fp16
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def evaluate(net, images, labels, batch_size: int, amp: str):
    """(average NLL loss, accuracy) on the test set; the sums stay on the device until the end."""
    net.eval()
    loss_sum, correct = torch.zeros((), dtype=torch.float64, device=images.device), 0
    with torch.inference_mode(), autocast(images.device, amp):
        for start in range(0, len(images), batch_size):
            output, target = net(images[start:start + batch_size]).float(), labels[start:start + batch_size]
            loss_sum += F.nll_loss(output, target, reduction="sum")
            correct += (output.argmax(dim=1) == target).sum()
    net.train()
    return loss_sum.item() / len(images), int(correct) / len(images)


def train(args, stop: dict) -> int:
    started, world = time.monotonic(), World()
    say = print if world.is_main else (lambda *_, **__: None)  # one copy of each line, from rank 0
    if args.threads:
        torch.set_num_threads(args.threads)
    # Adadelta's averages for weights that never get a gradient decay into float32 denormals, which
    # x86 computes many times slower; as zeros they change nothing a float32 model can see.
    torch.set_flush_denormal(True)
    device = pick_device(args.device, world.local_rank)
    ensure_writable(args.output_dir, "--output-dir")
    ensure_writable(args.checkpoint_dir, "--checkpoint-dir")
    data.check_raw_files(args.data_dir, not args.no_download)  # every rank, before joining the group
    world.init(device)
    amp, amp_reason = device_precision(args.amp, device)
    torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN may pick its fastest kernels
    if not world.is_main:
        world.barrier()  # rank 0 downloads first, the others then read what it wrote
    images, labels = data.load_split(args.data_dir, True, not args.no_download, args.limit_train)
    train_x, train_y = data.to_tensors(images, labels, device)
    test_x, test_y = data.to_tensors(*data.load_split(args.data_dir, False, False, args.limit_test), device)
    if world.is_main:
        world.barrier()

    torch.manual_seed(args.seed)
    net = Net().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adadelta(net.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    if world.enabled:
        torch.manual_seed(args.seed + world.rank)  # each rank its own dropout masks
    # What shapes the result: a checkpoint made with other values is not resumed (--epochs may grow).
    settings = {"batch_size": args.batch_size, "lr": args.lr, "gamma": args.gamma, "seed": args.seed, "amp": amp,
                "world_size": world.size, "train_data": data.fingerprint(images, labels)}
    epoch, step, history, trained_seconds = 1, 0, [], 0.0  # trained_seconds: over all resumes
    partial = {"loss_sum": 0.0, "samples": 0, "train_seconds": 0.0}  # of the epoch in progress
    existing = [] if args.dry_run else ckpt.list_checkpoints(args.checkpoint_dir)
    if existing and args.resume:
        epoch, step, history, partial, trained_seconds = ckpt.resume(
            existing[-1], settings, net, optimizer, scheduler, scaler)
        say(f"resuming from {existing[-1]} at epoch {epoch}, batch {step}")
    elif existing and world.is_main:
        for old in existing:
            old.unlink()
        say(f"--no-resume: removed {len(existing)} old checkpoint(s) from {args.checkpoint_dir}")
    model = torch.nn.parallel.DistributedDataParallel(net) if world.enabled else net

    def save_checkpoint():
        if world.is_main and not args.dry_run:
            return ckpt.save(args.checkpoint_dir, {
                "format": ckpt.FORMAT, "version": ckpt.VERSION, "signature": ckpt.signature(net.state_dict()),
                "settings": settings, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                "history": history, "partial": partial, "trained_seconds": trained_seconds,
                "rng": ckpt.rng_state(device)}, args.keep_checkpoints)
        return None

    def finish(code, reason, message, final=(None, None)):
        """Write the outputs (rank 0; not when preempted), say why the run ends; the exit code."""
        world.barrier()
        if world.is_main and code != EXIT_PREEMPTED:
            report.write_outputs(args.output_dir, history, None if code else net, {
                "final_accuracy": final[1], "final_test_loss": final[0], "stopped_reason": reason,
                "epochs_requested": args.epochs, "device": str(device), "amp_reason": amp_reason,
                "threads": torch.get_num_threads(), "torch_version": torch.__version__,
                "torchvision_version": torchvision.__version__, "train_samples": len(train_x),
                "test_samples": len(test_x), **settings, "total_seconds": round(trained_seconds, 3),
                "wall_seconds_this_run": round(time.monotonic() - started, 3)})
        say(message, file=sys.stderr if code == EXIT_DIVERGED else sys.stdout)
        world.close()
        return code

    say(f"training on {device} (amp {amp}: {amp_reason}; {torch.get_num_threads()} threads; world size {world.size}):"
        f" {len(train_x)} train / {len(test_x)} test images, epochs {epoch}..{args.epochs}, torch {torch.__version__}")
    while epoch <= args.epochs:  # a finished run started again trains nothing
        # A shuffle that depends only on (seed, epoch), so a resumed run sees the same batches, each a slice
        # of the shuffled tensors; DistributedSampler gives each rank its share.
        sampler = DistributedSampler(range(len(train_x)), world.size, world.rank, shuffle=True, seed=args.seed)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), device=device)
        epoch_x, epoch_y = train_x[order], train_y[order]
        batches = 1 if args.dry_run else math.ceil(len(order) / args.batch_size)
        if step > batches:
            raise BadInput(f"the checkpoint continues at batch {step} of epoch {epoch}, which has {batches}")
        loss_sum, samples, began = torch.zeros((), dtype=torch.float64, device=device), 0, time.monotonic()
        while step < batches:
            batch = slice(step * args.batch_size, (step + 1) * args.batch_size)
            loss = train_step(model, optimizer, scaler, epoch_x[batch], epoch_y[batch], amp)
            loss_sum, samples = loss_sum + loss * len(epoch_y[batch]), samples + len(epoch_y[batch])
            if step % args.log_interval == 0:
                say(f"Train Epoch: {epoch} [{step * args.batch_size}/{len(order)} ({100.0 * step / batches:.0f}%)]"
                    f"\tLoss: {loss.item():.6f}")
            step += 1
            if step < batches and world.any(stop["signal"] is not None, device):
                break
        trained_seconds += time.monotonic() - began
        epoch_loss, epoch_samples = world.reduce([loss_sum.item(), samples], device)
        partial = {"loss_sum": partial["loss_sum"] + epoch_loss, "samples": partial["samples"] + epoch_samples,
                   "train_seconds": partial["train_seconds"] + time.monotonic() - began}
        if not math.isfinite(partial["loss_sum"]):
            return finish(EXIT_DIVERGED, "diverged", f"error: the training loss is not finite in epoch {epoch}: "
                          f"training diverged (try a smaller --lr); nothing saved from epoch {epoch} on")
        if step < batches:  # stopped between two batches: save where we are
            return finish(EXIT_PREEMPTED, "preempted", f"received {stop['signal']}: saved {save_checkpoint()} at "
                          f"epoch {epoch}, batch {step}; exiting {EXIT_PREEMPTED}, run again to resume")

        began = time.monotonic()
        test_loss, accuracy = evaluate(net, test_x, test_y, args.test_batch_size, amp)
        trained_seconds += time.monotonic() - began
        history.append({"epoch": epoch, "epochs": args.epochs, "test_loss": round(test_loss, 6), "accuracy": accuracy,
                        "train_loss": round(partial["loss_sum"] / partial["samples"], 6),
                        "samples_per_s": round(partial["samples"] / partial["train_seconds"], 1),
                        "seconds": round(partial["train_seconds"] + time.monotonic() - began, 3),
                        "train_seconds": round(partial["train_seconds"], 3), "lr": optimizer.param_groups[0]["lr"]})
        scheduler.step()
        epoch, step, partial = epoch + 1, 0, {"loss_sum": 0.0, "samples": 0, "train_seconds": 0.0}
        if world.is_main:
            say(f"Test set: Average loss: {test_loss:.4f}, Accuracy: {round(accuracy * len(test_x))}/{len(test_x)} "
                f"({100.0 * accuracy:.2f}%)")
            report.write_history(args.output_dir, history)
            say("PROGRESS " + report.to_json(history[-1]))  # one line per epoch for log followers
        save_checkpoint()
        if epoch <= args.epochs and world.any(stop["signal"] is not None, device):
            return finish(EXIT_PREEMPTED, "preempted", f"received {stop['signal']}: checkpoint saved after epoch "
                          f"{epoch - 1}; exiting {EXIT_PREEMPTED}, run again to resume")

    reason = "dry_run" if args.dry_run else "epochs_completed"
    final = history[-1]["test_loss"], history[-1]["accuracy"]
    return finish(EXIT_OK, reason, f"done ({reason}): final accuracy {final[1]:.4f}, outputs in {args.output_dir}",
                  final)


def main(argv=None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # log followers see each line as it happens
    stop = {"signal": None}  # set by SIGTERM/SIGINT; the loop looks between batches, the next safe point
    previous = {sig: signal.signal(sig, lambda number, _: stop.update(signal=signal.Signals(number).name))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return train(parse_args(argv), stop)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 (the documented "unexpected failure": exit 1 with the traceback)
        import traceback
        traceback.print_exc()
        return EXIT_FAILURE
    finally:
        for sig, handler in previous.items():  # matters when main() runs in-process (the tests)
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())

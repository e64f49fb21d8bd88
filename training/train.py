"""Train the pytorch/examples MNIST CNN: the example's model and recipe, production-grade around it.

Run from a clone (`python training/train.py`) or in a container whose working dir holds this file
(`python train.py`). See README.md next to this file for options, outputs and exit codes.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # find mnist_trainer/ from any cwd

if __name__ == "__main__":
    from mnist_trainer.malloc_tunables import reexec_with_malloc_tunables  # noqa: E402
    reexec_with_malloc_tunables()  # before torch is imported: glibc reads its tunables at start-up

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.optim.lr_scheduler import StepLR  # noqa: E402

from mnist_trainer import checkpoint as ckpt  # noqa: E402
from mnist_trainer import data, native, report, runtime  # noqa: E402
from mnist_trainer.errors import (EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_FAILURE, EXIT_OK,  # noqa: E402
                                  EXIT_PREEMPTED, BadInput)
from mnist_trainer.loop import epoch_order, evaluate, train_step  # noqa: E402
from mnist_trainer.fast_adadelta import Adadelta  # noqa: E402
from mnist_trainer.fast_net import FastNet  # noqa: E402


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the whole usage first)
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description="PyTorch MNIST Example, production-grade: checkpoints, resume, metrics, DDP.",
               epilog=EXIT_CODES_HELP + ". Started by torchrun (WORLD_SIZE > 1) it trains with "
               "DistributedDataParallel; only rank 0 writes files.")
    # the example's options, same names and defaults
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                   help="input batch size for training (default: 64)")
    p.add_argument("--test-batch-size", type=positive_int, default=1000, metavar="N",
                   help="input batch size for testing (default: 1000)")
    p.add_argument("--epochs", type=positive_int, default=14, metavar="N",
                   help="number of epochs to train (default: 14)")
    p.add_argument("--lr", type=positive_float, default=1.0, metavar="LR", help="learning rate (default: 1.0)")
    p.add_argument("--gamma", type=positive_float, default=0.7, metavar="M",
                   help="learning rate step gamma (default: 0.7)")
    p.add_argument("--no-cuda", "--no-accel", dest="no_accel", action="store_true",
                   help="disables the GPU (same as --device cpu)")
    p.add_argument("--dry-run", action="store_true", help="quickly check a single pass: one batch, one epoch")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default: 1)")
    p.add_argument("--log-interval", type=positive_int, default=10, metavar="N",
                   help="how many batches to wait before logging training status (default: 10)")
    p.add_argument("--save-model", action="store_true",
                   help="kept for compatibility with the example: model.pt is always saved")
    # where things are
    p.add_argument("--data-dir", type=Path, default=Path("../data"),
                   help="dataset root; torchvision reads DATA_DIR/MNIST/raw (default: ../data, as the example)")
    p.add_argument("--output-dir", type=Path, default=Path("outputs"),
                   help="metrics.jsonl, metrics.json, model.pt, curves.png go here (default: outputs)")
    p.add_argument("--checkpoint-dir", type=Path, default=None,
                   help="per-epoch checkpoints (default: OUTPUT_DIR/checkpoints)")
    p.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="continue from the newest checkpoint in --checkpoint-dir if there is one (the default)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start from scratch and delete this trainer's old checkpoints in --checkpoint-dir")
    p.add_argument("--keep-checkpoints", type=positive_int, default=2, metavar="N",
                   help="how many of the newest checkpoints to keep (default: 2)")
    p.add_argument("--no-download", action="store_true",
                   help="never download: fail if the data is not in --data-dir")
    # how and how long
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: the GPU if there is one (default: auto)")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="bfloat16 autocast; auto: on where the GPU/CPU computes bf16 natively (default: auto)")
    p.add_argument("--fused-kernels", choices=("auto", "off"), default="auto",
                   help="auto: on the CPU, compile mnist_trainer/kernels.c with the C compiler (cc) and use "
                        "its one-pass Adadelta step and max-pool/ReLU/dropout; torch's operations where there "
                        "is no compiler. off: torch's operations (default: auto)")
    p.add_argument("--threads", type=non_negative_int, default=0, metavar="N",
                   help="CPU threads for torch; 0: torch's default, one per core (default: 0)")
    p.add_argument("--target-accuracy", type=float, default=None, metavar="A",
                   help="stop once the test accuracy (0-1) reaches A")
    p.add_argument("--max-minutes", type=positive_float, default=None, metavar="M",
                   help="stop (checkpoint saved, exit 0) once training has taken M minutes, summed over resumes")
    p.add_argument("--limit-train", type=non_negative_int, default=0, metavar="N",
                   help="use only the first N training images (0: all)")
    p.add_argument("--limit-test", type=non_negative_int, default=0, metavar="N",
                   help="use only the first N test images (0: all)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
        raise BadInput(f"--target-accuracy must be in (0, 1], got {args.target_accuracy}")
    if args.no_accel:
        args.device = "cpu"
    if args.dry_run:
        args.epochs = 1
    if args.checkpoint_dir is None:
        args.checkpoint_dir = args.output_dir / "checkpoints"
    return args


def ensure_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"{what} {folder} is not writable: {exc.strerror or exc}") from None


class StopSignal:
    """Remembers SIGTERM/SIGINT; the loop checks it between batches (the next safe point)."""

    def __init__(self):
        self.received = None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame):
        self.received = signal.Signals(signum).name  # no printing here: not safe inside a handler


def log(message: str) -> None:
    print(message, flush=True)


def run(args) -> int:
    stop = StopSignal()
    try:
        return train(args, stop)
    finally:
        stop.restore()  # matters when run() is called in-process (tests)


def train(args, stop) -> int:
    started = time.monotonic()
    tuning = {"flush_denormals": runtime.flush_denormals()}  # first: torch's worker threads inherit it
    world = runtime.Distributed()
    say = log if world.is_main else (lambda _message: None)  # one copy of each line, from rank 0
    runtime.set_threads(args.threads)
    tuning["keep_freed_memory"] = runtime.keep_freed_memory()
    tuning["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES")
    device = runtime.pick_device(args.device, world.local_rank)
    # Every rank checks its input before joining the process group, so a bad input ends them all.
    ensure_writable(args.output_dir, "--output-dir")
    ensure_writable(args.checkpoint_dir, "--checkpoint-dir")
    download = not args.no_download
    data.check_raw_files(args.data_dir, download)
    world.init(device)
    amp = runtime.choose_amp(args.amp, device)

    # Data: decoded and normalized once, resident on the training device.
    t0 = time.monotonic()
    if world.is_main:
        train_raw = data.load_split(args.data_dir, True, download, args.limit_train)
    world.barrier()  # rank 0 downloads first; the others then read what it wrote
    if not world.is_main:
        train_raw = data.load_split(args.data_dir, True, False, args.limit_train)
    test_raw = data.load_split(args.data_dir, False, False, args.limit_test)
    train_x, train_y = data.to_tensors(*train_raw, device)
    test_x, test_y = data.to_tensors(*test_raw, device)
    data_seconds = time.monotonic() - t0

    t0 = time.monotonic()
    kernels = None
    if device.type == "cpu" and args.fused_kernels == "auto":
        kernels, tuning["fused_kernels"] = native.load()
    else:
        tuning["fused_kernels"] = "off" if args.fused_kernels == "off" else f"not used on {device.type}"
    tuning["fused_kernels_seconds"] = round(time.monotonic() - t0, 3)

    torch.manual_seed(args.seed)
    # the example's Net, evaluated faster (fast_net.py: same parameters, same function)
    net = FastNet(kernels=kernels).to(device).to(memory_format=torch.channels_last)
    optimizer = Adadelta(net.parameters(), lr=args.lr, kernels=kernels)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    if world.enabled:
        torch.manual_seed(args.seed + world.rank)  # different dropout masks per rank

    # Resume: the newest checkpoint, or a clean start.
    epoch, step, history, partial = 1, 0, [], {"loss_sum": 0.0, "samples": 0, "train_seconds": 0.0}
    trained_seconds = 0.0  # training time summed over resumes (what --max-minutes limits)
    existing = ckpt.list_checkpoints(args.checkpoint_dir)
    if existing and args.resume:
        state = ckpt.load(existing[-1], net.state_dict())
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        epoch, step, history = state["epoch"], state["step"], list(state["history"])
        trained_seconds = state["trained_seconds"]
        layout = {"batch_size": args.batch_size, "world_size": world.world_size, "train_samples": len(train_x)}
        if step and state["layout"] != layout:
            say(f"warning: {existing[-1].name} was saved mid-epoch with {state['layout']}, now {layout}: "
                f"restarting epoch {epoch}")
            step = 0
        if step:
            partial = state["partial"]
        say(f"resuming from {existing[-1]} at epoch {epoch}, batch {step}")
    elif existing and world.is_main:
        for old in existing:
            old.unlink()
        say(f"--no-resume: removed {len(existing)} old checkpoint(s) from {args.checkpoint_dir}")

    model = net
    if world.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    def save_checkpoint(at_epoch, at_step, part):
        if not world.is_main:
            return None
        extra = {"history": history, "partial": part, "trained_seconds": trained_seconds,
                 "layout": {"batch_size": args.batch_size, "world_size": world.world_size,
                            "train_samples": len(train_x)}}
        return ckpt.save(args.checkpoint_dir,
                         ckpt.payload(net.state_dict(), optimizer, scheduler, at_epoch, at_step, extra),
                         args.keep_checkpoints)

    say(f"training on {device} (amp {'bf16' if amp else 'off'}, {torch.get_num_threads()} threads, "
        f"world size {world.world_size}): {len(train_x)} train / {len(test_x)} test images, "
        f"epochs {epoch}..{args.epochs}, torch {torch.__version__}")

    reason = finished_reason(args, history, trained_seconds, epoch)
    while reason is None:
        order = epoch_order(len(train_x), epoch, args.seed, world.world_size, world.rank, device)
        batches = list(order.split(args.batch_size))
        if args.dry_run:
            batches = batches[:1]
        segment_start = time.monotonic()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        samples = 0
        model.train()
        while step < len(batches):
            idx = batches[step]
            loss = train_step(model, optimizer, train_x[idx], train_y[idx], device, amp)
            loss_sum += loss * len(idx)
            samples += len(idx)
            if step % args.log_interval == 0:
                say(f"Train Epoch: {epoch} [{step * args.batch_size}/{len(order)} "
                    f"({100.0 * step / len(batches):.0f}%)]\tLoss: {loss.item():.6f}")
            step += 1
            over_time = (args.max_minutes is not None and
                         trained_seconds + time.monotonic() - segment_start > 60 * args.max_minutes)
            if world.any_true(stop.received is not None or over_time, device) and step < len(batches):
                break
        seconds = time.monotonic() - segment_start
        trained_seconds += seconds
        totals = world.sum([loss_sum.item(), samples], device)
        partial = {"loss_sum": partial["loss_sum"] + totals[0], "samples": partial["samples"] + int(totals[1]),
                   "train_seconds": partial["train_seconds"] + seconds}

        if step < len(batches):  # interrupted between batches: save where we are
            path = save_checkpoint(epoch, step, partial)
            world.barrier()
            if stop.received is not None:
                say(f"received {stop.received}: saved {path} at epoch {epoch}, batch {step}; "
                    f"exiting {EXIT_PREEMPTED}, run again to resume")
                world.close()
                return EXIT_PREEMPTED
            reason = "max_minutes"
            break

        t_eval = time.monotonic()
        test_loss, accuracy = evaluate(net, test_x, test_y, args.test_batch_size, device, amp)
        eval_seconds = time.monotonic() - t_eval
        trained_seconds += eval_seconds
        row = {"epoch": epoch, "epochs": args.epochs,
               "train_loss": round(partial["loss_sum"] / partial["samples"], 6),
               "test_loss": round(test_loss, 6), "accuracy": round(accuracy, 6),
               "samples_per_s": round(partial["samples"] / partial["train_seconds"], 1),
               "seconds": round(partial["train_seconds"] + eval_seconds, 3),
               "train_seconds": round(partial["train_seconds"], 3),
               "lr": optimizer.param_groups[0]["lr"]}
        history.append(row)
        scheduler.step()
        epoch, step = epoch + 1, 0
        partial = {"loss_sum": 0.0, "samples": 0, "train_seconds": 0.0}
        if world.is_main:
            say(f"Test set: Average loss: {test_loss:.4f}, Accuracy: {round(accuracy * len(test_x))}/"
                f"{len(test_x)} ({100.0 * accuracy:.2f}%)")
            report.write_history(args.output_dir, history)
            say(report.progress_line(row))
        save_checkpoint(epoch, 0, partial)
        trained_seconds = world.max(trained_seconds, device)  # ranks must agree on --max-minutes
        reason = finished_reason(args, history, trained_seconds, epoch)
        if reason is None and world.any_true(stop.received is not None, device):
            world.barrier()
            say(f"received {stop.received}: checkpoint saved after epoch {epoch - 1}; "
                f"exiting {EXIT_PREEMPTED}, run again to resume")
            world.close()
            return EXIT_PREEMPTED

    if world.is_main:
        final_loss, final_accuracy = (history[-1]["test_loss"], history[-1]["accuracy"]) if history else (None, None)
        if reason == "max_minutes" or not history:  # the model changed after the last evaluation
            final_loss, final_accuracy = evaluate(net, test_x, test_y, args.test_batch_size, device, amp)
        write_outputs(args, net, history, reason, final_loss, final_accuracy, device, amp, world,
                      len(train_x), len(test_x), data_seconds, trained_seconds, time.monotonic() - started,
                      tuning)
    world.barrier()
    world.close()
    return EXIT_OK


def finished_reason(args, history, trained_seconds, next_epoch):
    """Why the run is over (None: keep training). Also true for a finished run started again."""
    if args.target_accuracy is not None and any(r["accuracy"] >= args.target_accuracy for r in history):
        return "target_accuracy"
    if args.max_minutes is not None and trained_seconds >= 60 * args.max_minutes:
        return "max_minutes"
    if args.dry_run and history:
        return "dry_run"
    if next_epoch > args.epochs:
        return "epochs_completed"
    return None


def write_outputs(args, net, history, reason, final_loss, final_accuracy, device, amp, world,
                  train_samples, test_samples, data_seconds, trained_seconds, wall_seconds, tuning) -> None:
    out = args.output_dir
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / ".model.pt.tmp")
    os.replace(out / ".model.pt.tmp", out / "model.pt")
    report.write_history(out, history)
    best = max(history, key=lambda r: r["accuracy"]) if history else None
    summary = {
        "final_accuracy": final_accuracy,
        "final_test_loss": final_loss,
        "best_accuracy": best["accuracy"] if best else final_accuracy,
        "best_epoch": best["epoch"] if best else None,
        "epochs_completed": len(history),
        "epochs_requested": args.epochs,
        "stopped_reason": reason,
        "device": str(device),
        "amp": "bf16" if amp else "off",
        "threads": torch.get_num_threads(),
        "world_size": world.world_size,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "train_samples": train_samples,
        "test_samples": test_samples,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "gamma": args.gamma,
        "seed": args.seed,
        "data_seconds": round(data_seconds, 3),
        "setup_seconds": round(data_seconds + tuning["fused_kernels_seconds"], 3),
        "total_seconds": round(trained_seconds, 3),
        "wall_seconds_this_run": round(wall_seconds, 3),
        "cpu_tuning": tuning,
    }
    report.write_summary(out, summary)
    report.plot_curves(out, history)
    log(f"done ({reason}): final accuracy {final_accuracy:.4f}, best {summary['best_accuracy']:.4f}; "
        f"outputs in {out}")


def main(argv=None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # log followers see lines as they happen
    try:
        return run(parse_args(argv))
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 (the documented "unexpected failure" exit code)
        import traceback
        traceback.print_exc()
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

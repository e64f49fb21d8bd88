"""The command line: the example's options, the folders (flags, else CLOUDTRAIN_* variables), the limits."""
import argparse
import math
import os
from pathlib import Path

from .errors import EXIT_BAD_INPUT, BadInput


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the whole usage first)
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


def checked(kind, accept, what):
    def parse(text):
        value = kind(text)
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse says "invalid int value"
    return parse


POSITIVE_INT = checked(int, lambda v: v > 0, "a positive integer")
COUNT = checked(int, lambda v: v >= 0, "0 or more")
POSITIVE = checked(float, lambda v: v > 0, "a positive finite number")


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    p = Parser(description="PyTorch MNIST Example with checkpoints, exact resume, metrics and DDP.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter,
               epilog="exit codes: 0 done; 1 unexpected failure; 2 bad input (one line 'error: ...'); "
                      "3 the loss diverged; 75 stopped by SIGTERM/SIGINT, checkpoint saved")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, metavar="N", help="training batch")
    p.add_argument("--test-batch-size", type=POSITIVE_INT, default=1000, metavar="N", help="evaluation batch")
    p.add_argument("--epochs", type=POSITIVE_INT, default=14, metavar="N", help="epochs to train")
    p.add_argument("--lr", type=POSITIVE, default=1.0, metavar="LR", help="learning rate")
    p.add_argument("--gamma", type=POSITIVE, default=0.7, metavar="M", help="learning rate step gamma")
    p.add_argument("--no-cuda", "--no-accel", dest="no_accel", action="store_true", help="same as --device cpu")
    p.add_argument("--dry-run", action="store_true", help="one batch, one epoch; no checkpoint read or written")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="random seed")
    p.add_argument("--log-interval", type=POSITIVE_INT, default=10, metavar="N", help="batches between log lines")
    p.add_argument("--save-model", action="store_true", help="accepted, as in the example; model.pt is always saved")
    p.add_argument("--data-dir", type=Path, default=Path(env("CLOUDTRAIN_DATA_DIR") or "../data"),
                   help="dataset root, read as DATA_DIR/MNIST/raw ($CLOUDTRAIN_DATA_DIR if set)")
    p.add_argument("--output-dir", type=Path, default=Path(env("CLOUDTRAIN_OUTPUT_DIR") or "outputs"),
                   help="metrics, model.pt, curves.png ($CLOUDTRAIN_OUTPUT_DIR if set)")
    p.add_argument("--checkpoint-dir", type=Path, default=env("CLOUDTRAIN_CHECKPOINT_DIR") or None,
                   help="checkpoints ($CLOUDTRAIN_CHECKPOINT_DIR if set, else OUTPUT_DIR/checkpoints)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over, deleting this trainer's checkpoints (default: resume from the newest)")
    p.add_argument("--keep-checkpoints", type=POSITIVE_INT, default=2, metavar="N", help="newest checkpoints kept")
    p.add_argument("--no-download", action="store_true", help="fail if the data is not in --data-dir")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: the accelerator if any")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="mixed precision; auto: from the hardware")
    p.add_argument("--threads", type=COUNT, default=0, metavar="N", help="CPU threads (0: one per core)")
    p.add_argument("--limit-train", type=COUNT, default=0, metavar="N", help="only the first N training images")
    p.add_argument("--limit-test", type=COUNT, default=0, metavar="N", help="only the first N test images")
    args = p.parse_args(argv)
    args.device = "cpu" if args.no_accel else args.device
    args.epochs = 1 if args.dry_run else args.epochs
    args.checkpoint_dir = Path(args.checkpoint_dir or args.output_dir / "checkpoints")
    return args


def ensure_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".write-test-{os.getpid()}").touch()
        (folder / f".write-test-{os.getpid()}").unlink()
    except OSError as exc:
        raise BadInput(f"{what} {folder} is not writable: {exc.strerror or exc}") from None

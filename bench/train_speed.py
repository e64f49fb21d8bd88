"""Training speed: training/train.py against the pytorch/examples MNIST recipe, side by side.

Both programs train the same Net with the same recipe (batch 64, Adadelta lr 1.0, StepLR 0.7) on the
same real-data split (made here from ../shared/data/mnist with hacking/make_mnist_split.py). They run
interleaved, one after the other, for several rounds (the order alternates per round, so drift in
machine load hits both), each as its own process with the default thread settings. Round k uses seed
k for both programs: on a 2,000-image test set one seed's accuracy moves by a few images (about
0.2%), so the accuracy target and the time to reach it are taken per round, as medians.

Printed: training samples/s of each (from each program's own per-epoch training time) and the ratio;
the time to reach the accuracy the reference has after 3 epochs, whole process included (from the
launch of the process to the moment its epoch line arrives: interpreter, imports, data, training,
evaluation) and the ratio; final accuracies after the same number of epochs; and the fraction of the
float32 compute limit reached (FLOPs per sample from the Net's layer shapes, forward + backward).

Runs unchanged on a GPU: both programs then use it (the trainer keeps the data on the device; the
reference uses its accelerator DataLoader settings).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hacking"))
sys.path.insert(0, str(REPO / "bench"))

import make_mnist_split  # noqa: E402
from _flops import training_flops_per_sample  # noqa: E402

REFERENCE_EPOCHS_FOR_TARGET = 3


def child_env(args) -> dict:
    """Both programs' environment: OMP_NUM_THREADS when --threads is given."""
    env = dict(os.environ)
    if args.threads > 0:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def run(cmd, env: dict, prefix: str, work: Path) -> list:
    """Run cmd; the JSON of each stdout line starting with prefix, with "arrived": seconds since launch."""
    rows = []
    with open(work / "stderr.txt", "w+", encoding="utf-8") as err:
        launched = time.monotonic()
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env) as proc:
            for line in proc.stdout:
                if line.startswith(prefix + " "):
                    rows.append({**json.loads(line.split(" ", 1)[1]), "arrived": time.monotonic() - launched})
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read()[-3000:]}")
    return rows


def run_reference(args, data_dir: Path, work: Path, env: dict, seed: int) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "_reference_mnist.py"), "--data-dir", str(data_dir),
           "--epochs", str(args.epochs), "--seed", str(seed)]
    setup, *epochs = run(cmd, env, "REFERENCE", work)
    return {"epochs": epochs, "threads": setup["threads"], "device": setup["device"], "amp": "off"}


def run_trainer(args, data_dir: Path, work: Path, env: dict, seed: int) -> dict:
    out_dir = work / "trainer-out"
    cmd = [sys.executable, str(REPO / "training" / "train.py"), "--data-dir", str(data_dir),
           "--output-dir", str(out_dir), "--epochs", str(args.epochs), "--seed", str(seed),
           "--no-download", "--no-resume", "--log-interval", "1000000", "--amp", args.amp]
    epochs = run(cmd, env, "PROGRESS", work)
    summary = json.loads((out_dir / "metrics.json").read_text())
    return {"epochs": epochs, "threads": summary["threads"], "device": summary["device"], "amp": summary["amp"],
            "amp_reason": summary["amp_reason"]}


MATMUL_PEAK = """
import time, torch
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
for _ in range(3):
    a @ b
began = time.perf_counter()
for _ in range(10):
    a @ b
print(2 * 2048 ** 3 * 10 / (time.perf_counter() - began) / 1e9)
"""


def measured_peak_gflops(env: dict) -> float:
    """The CPU's float32 matmul rate with the programs' thread settings: what a convolution can reach at best."""
    out = subprocess.run([sys.executable, "-c", MATMUL_PEAK], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def samples_per_s(result: dict, train_samples: int) -> float:
    seconds = sum(row["train_seconds"] for row in result["epochs"])
    return train_samples * len(result["epochs"]) / seconds


def time_to(result: dict, target: float):
    """(seconds from launch, epoch) when the first epoch whose accuracy reaches target was reported."""
    for row in result["epochs"]:
        if row["accuracy"] >= target:
            return row["arrived"], row["epoch"]
    return None, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, one seed each (default: 3)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per run, at least 3 (default: 4; the target is the reference's "
                             "accuracy after epoch 3)")
    parser.add_argument("--train", type=int, default=8000, help="train split size (default: 8000)")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                        help="the trainer's --amp (default: auto)")
    parser.add_argument("--peak-gflops", type=float, default=0.0,
                        help="float32 peak of this machine for the threads used, GFLOP/s (default: measured, "
                             "a 2048x2048 float32 matmul on the CPU; set it for a GPU)")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS for both programs (default: 0, torch's default of one per core; "
                             "1 is faster when other work shares the cores)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of round 1; round k uses seed + k - 1 for both programs, so the "
                             "medians span several seeds (default: 1)")
    parser.add_argument("--source", type=Path, default=make_mnist_split.DEFAULT_SOURCE)
    args = parser.parse_args()
    if args.epochs < REFERENCE_EPOCHS_FOR_TARGET:
        parser.error(f"--epochs must be at least {REFERENCE_EPOCHS_FOR_TARGET}")

    with tempfile.TemporaryDirectory(prefix="ct-train-bench-") as tmp:
        work = Path(tmp)
        split = make_mnist_split.make_split(args.source, work / "data", args.train)
        print(f"data: real MNIST split, {split['train']} train / {split['test']} test images; "
              f"{args.rounds} rounds x {args.epochs} epochs each; cpus: {os.cpu_count()}, load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        env = child_env(args)
        rounds = []
        for number in range(1, args.rounds + 1):
            order = ("reference", "trainer") if number % 2 else ("trainer", "reference")
            seed = args.seed + number - 1
            result = {}
            for name in order:
                result[name] = (run_reference(args, work / "data", work, env, seed) if name == "reference"
                                else run_trainer(args, work / "data", work, env, seed))
            ref, new = result["reference"], result["trainer"]
            target = ref["epochs"][REFERENCE_EPOCHS_FOR_TARGET - 1]["accuracy"]
            ref_time, ref_epoch = time_to(ref, target)
            new_time, new_epoch = time_to(new, target)
            row = {"round": number, "order": order,
                   "ref_sps": samples_per_s(ref, split["train"]), "new_sps": samples_per_s(new, split["train"]),
                   "target": target, "ref_time": ref_time, "ref_epoch": ref_epoch,
                   "new_time": new_time, "new_epoch": new_epoch,
                   "ref_final": ref["epochs"][-1]["accuracy"], "new_final": new["epochs"][-1]["accuracy"],
                   "device": new["device"], "amp": f"{new['amp']} ({new['amp_reason']})", "threads": new["threads"]}
            rounds.append(row)
            reached = (f"{row['new_time']:.1f}s (epoch {row['new_epoch']})" if new_time is not None
                       else f"not reached in {args.epochs} epochs")
            print(f"round {number} (seed {seed}, {' then '.join(order)}): samples/s reference {row['ref_sps']:.0f}, "
                  f"trainer {row['new_sps']:.0f}; to {target:.4f}: reference {ref_time:.1f}s (epoch {ref_epoch}), "
                  f"trainer {reached}, whole processes; "
                  f"final accuracy reference {row['ref_final']:.4f}, "
                  f"trainer {row['new_final']:.4f}", flush=True)

    med = statistics.median
    ref_sps, new_sps = med(r["ref_sps"] for r in rounds), med(r["new_sps"] for r in rounds)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    print(f"trainer: device {rounds[0]['device']}, amp {rounds[0]['amp']}, {rounds[0]['threads']} threads")
    print(f"training samples/s (median of {len(rounds)}): reference {ref_sps:.0f}, trainer {new_sps:.0f}, "
          f"ratio {med(r['new_sps'] / r['ref_sps'] for r in rounds):.2f}x (median of the rounds' ratios)")
    reached = [r for r in rounds if r["new_time"] is not None]
    if len(reached) == len(rounds):
        ref_t, new_t = med(r["ref_time"] for r in rounds), med(r["new_time"] for r in rounds)
        ratio = med(r["ref_time"] / r["new_time"] for r in rounds)
        print(f"time to the reference's {REFERENCE_EPOCHS_FOR_TARGET}-epoch accuracy "
              f"(median target {med(r['target'] for r in rounds):.4f}): reference {ref_t:.1f}s, "
              f"trainer {new_t:.1f}s (medians), ratio {ratio:.2f}x (median of the rounds' ratios)")
    else:
        print(f"time to the reference's {REFERENCE_EPOCHS_FOR_TARGET}-epoch accuracy: the trainer did not "
              f"reach it within {args.epochs} epochs in {len(rounds) - len(reached)} of {len(rounds)} rounds")
    ref_final, new_final = med(r["ref_final"] for r in rounds), med(r["new_final"] for r in rounds)
    print(f"final accuracy after {args.epochs} epochs (median): reference {ref_final:.4f}, "
          f"trainer {new_final:.4f} ({'no worse' if new_final >= ref_final else 'WORSE'})")
    flops = training_flops_per_sample()
    peak = args.peak_gflops or measured_peak_gflops(env)
    limit = peak * 1e9 / flops
    print(f"compute: {flops / 1e6:.1f} MFLOP per training sample (forward + backward); float32 limit at "
          f"{peak:.0f} GFLOP/s ({'given' if args.peak_gflops else 'measured: float32 matmul'}) = {limit:.0f} samples/s; "
          f"trainer reaches {new_sps / limit:.0%} of it, reference {ref_sps / limit:.0%}; 3x the reference would "
          f"need {3 * ref_sps / limit:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

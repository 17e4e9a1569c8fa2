"""What the training-run pieces cost next to the step they extend, paired in one run.

    python benches/bench_training.py [--workload mlp many resnet50 flat] [--dtype float32]

For each workload (those of ``bench_step.py``), timed in alternation:

- ``Scheduled(AdamW(), eta=cosine_decay(...))`` against ``AdamW()``;
- ``OptimiserChain(ClipGlobalNorm(1.0), AdamW())`` against ``AdamW()``;
- ``ema_`` of the model, as bytes moved per second (reads of the average and
  the model, a write of the average);
- ``save`` and ``load`` of the ``AdamW`` state against ``np.savez`` and
  ``np.load`` of the same arrays (``resnet50`` and ``flat`` only).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import REPEATS, alternated, fmt_time, make_data, ours_step, paired_rounds

import optimisers as o
from optimisers import schedules


def steps(workload: str, dtype: np.dtype) -> None:
    names, xs, gs = make_data(workload, dtype)
    rules = {
        "AdamW": o.AdamW(),
        "Scheduled(AdamW)": o.Scheduled(o.AdamW(), eta=schedules.cosine_decay(1e-3, 10**6)),
        "ClipGlobalNorm, AdamW": o.OptimiserChain(o.ClipGlobalNorm(1.0), o.AdamW()),
    }
    runners = [ours_step(rule, names, xs, gs) for rule in rules.values()]
    rounds, batch = paired_rounds(REPEATS[workload][0])
    times = alternated(runners, rounds, batch=batch)
    base = times[0]
    for name, t in zip(rules, times):
        print(f"  {name:<24} {fmt_time(t):>10}  {t / base:5.2f}x AdamW")


def ema(workload: str, dtype: np.dtype) -> None:
    names, xs, _ = make_data(workload, dtype)
    model = dict(zip(names, xs))
    average = {k: v.copy() for k, v in model.items()}
    rounds, batch = paired_rounds(REPEATS[workload][0])
    (t,) = alternated([lambda: o.ema_(average, model, 0.999)], rounds, batch=batch)
    moved = 3 * sum(x.nbytes for x in xs)
    print(f"  ema_                     {fmt_time(t):>10}  {moved / t / 1e9:5.1f} GB/s")


def checkpoints(workload: str, dtype: np.dtype) -> None:
    names, xs, gs = make_data(workload, dtype)
    model = dict(zip(names, xs))
    state = o.setup(o.AdamW(), model)
    o.update_(state, model, dict(zip(names, gs[0])))
    arrays = {f"{k}.{i}": a for k, leaf in state.items() for i, a in enumerate(leaf.state[:2])}
    folder = tempfile.mkdtemp(prefix="bench_training_")
    ours, theirs = os.path.join(folder, "ours.npz"), os.path.join(folder, "theirs.npz")

    def np_load() -> None:
        with np.load(theirs) as z:
            for k in z.files:
                z[k]

    saves = alternated([lambda: o.save(ours, state), lambda: np.savez(theirs, **arrays)], 5)
    loads = alternated([lambda: o.load(ours, state), np_load], 5)
    print(f"  save {fmt_time(saves[0]):>10}  {saves[0] / saves[1]:5.2f}x np.savez")
    print(f"  load {fmt_time(loads[0]):>10}  {loads[0] / loads[1]:5.2f}x np.load")
    for path in (ours, theirs):
        os.remove(path)
    os.rmdir(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", nargs="+", default=["mlp", "many"])
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    print(f"{time.strftime('%Y-%m-%d %H:%M')} {args.dtype}, {o.get_num_threads()} threads")
    for workload in args.workload:
        print(workload)
        steps(workload, dtype)
        ema(workload, dtype)
        if workload in ("resnet50", "flat"):
            checkpoints(workload, dtype)


if __name__ == "__main__":
    main()

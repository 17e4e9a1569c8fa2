"""Two builds of optimisers timed in alternation: is a change faster or slower?

Each build is a `python/` directory holding the package and its compiled
`_core` (a worktree of the old commit with its extension copied in, say).
Every timing runs in a fresh process, in the order old, new, new, old (then
new, old, old, new), so that the host's drift falls on both sides alike; each
round gives a ratio new/old of the mean step times, and the median of the
rounds is reported. Build both sides with the release profile.

    python benches/ab_builds.py OLD/python NEW/python --rounds 4 --workloads mlp many

A single timing (used by the rounds, or by hand):

    PYTHONPATH=NEW/python python benches/ab_builds.py --time mlp
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# Steps timed per process, by workload.
REPS = {"flat": 20, "resnet": 20, "many": 200, "mlp": 2000, "clipnorm": 200}
MLP = [(64, 64), (64,), (40, 64), (40,), (10, 40), (10,)]


def time_one(workload: str) -> float:
    """The median time of one `update_` step of `workload`, Adam float32, in µs."""
    import optimisers as o  # the build on PYTHONPATH

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_step import RESNET50

    rule = o.Adam()
    shapes = {
        "flat": [(1 << 25,)],
        "resnet": [s for _, s in RESNET50],
        "many": [(1000,)] * 1000,
        "mlp": MLP,
        "clipnorm": [(1000,)] * 1000,
    }[workload]
    if workload == "clipnorm":
        rule = o.OptimiserChain(o.ClipNorm(1.0), o.Adam())
    rng = np.random.default_rng(0)
    model = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grad = [(rng.standard_normal(s) * 1e-3).astype(np.float32) for s in shapes]
    state = o.setup(rule, model)
    for _ in range(3):
        state, model = o.update_(state, model, grad)
    times = []
    for _ in range(REPS[workload]):
        start = time.perf_counter()
        state, model = o.update_(state, model, grad)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def run(tree: str, workload: str) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--time", workload],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", nargs="?")
    parser.add_argument("new", nargs="?")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workloads", nargs="+", default=list(REPS), choices=list(REPS))
    parser.add_argument("--time", choices=list(REPS), help="time one workload in this process")
    args = parser.parse_args()
    if args.time:
        print(f"{time_one(args.time):.3f}")
        return
    if not (args.old and args.new):
        parser.error("give the old and the new build's python/ directories")
    for workload in args.workloads:
        ratios, seen = [], {"old": [], "new": []}
        for r in range(args.rounds):
            order = ["old", "new", "new", "old"] if r % 2 == 0 else ["new", "old", "old", "new"]
            got: dict[str, list[float]] = {"old": [], "new": []}
            for side in order:
                got[side].append(run(getattr(args, side), workload))
            for side in got:
                seen[side] += got[side]
            ratios.append(statistics.mean(got["new"]) / statistics.mean(got["old"]))
        rounds = ", ".join(f"{x:.3f}" for x in ratios)
        print(
            f"{workload}: new/old {statistics.median(ratios):.3f} (rounds {rounds}); "
            f"median step old {statistics.median(seen['old']):.1f} µs, "
            f"new {statistics.median(seen['new']):.1f} µs",
            flush=True,
        )


if __name__ == "__main__":
    main()

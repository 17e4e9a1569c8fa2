"""Memory over many steps: ``update_`` must allocate nothing that grows with the
model, and ``update`` only the copies it returns.

    python benches/bench_memory.py [--steps 1000] [--rule Adam] [--dtype float32]

On ResNet-50's 161 parameter arrays (25.6M numbers) with a dict model, this
runs ``update_`` for ``--steps`` steps and reports the process's resident
memory (``/proc/self/statm``) after the first step, at every tenth of the run
and at the end, and the peak of Python's own allocations (``tracemalloc``)
during one step; then the same for ``update``, whose new model and state are
kept for one step and then dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import RESNET50

import optimisers

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def peak_python_kb(step) -> float:
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rule", default="Adam")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    model = {name: rng.standard_normal(shape, dtype=dtype) for name, shape in RESNET50}
    grads = [{k: rng.standard_normal(v.shape, dtype=dtype) for k, v in model.items()}]
    grads.append({k: -g for k, g in grads[0].items()})
    model_mb = sum(v.nbytes for v in model.values()) / 1e6
    rule = getattr(optimisers, args.rule)()
    print(f"ResNet-50, {args.dtype}, {args.rule}: parameters {model_mb:.1f} MB")

    state = optimisers.setup(rule, model)
    state, model = optimisers.update_(state, model, grads[0])
    first = resident_mb()
    rows = [(1, first)]
    for t in range(2, args.steps + 1):
        state, model = optimisers.update_(state, model, grads[t % 2])
        if t % max(1, args.steps // 10) == 0:
            rows.append((t, resident_mb()))
    print("\nupdate_: resident memory (MB)")
    print("| step | resident MB | change since step 1 |")
    print("|---|---|---|")
    for t, mb in rows:
        print(f"| {t} | {mb:.1f} | {mb - first:+.1f} |")
    peak = peak_python_kb(lambda: optimisers.update_(state, model, grads[0]))
    print(f"\nupdate_: Python allocations during one step peak at {peak:.1f} kB")

    base = resident_mb()
    kept = optimisers.update(state, model, grads[1])
    after = resident_mb()
    del kept
    dropped = resident_mb()
    print(
        f"\nupdate: resident {base:.1f} MB before, {after:.1f} MB holding its result "
        f"(+{after - base:.1f} MB; the new parameters and state arrays are "
        f"{model_mb * (1 + len(rule._arrays(state[RESNET50[0][0]].state))):.1f} MB), "
        f"{dropped:.1f} MB after dropping it"
    )


if __name__ == "__main__":
    main()

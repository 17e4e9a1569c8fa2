"""Flat-vector copies on ResNet-50's parameters: destructure, re(flat),
re(flat, copy=False) and re.flatten, against a memcpy of the same bytes.

    python benches/bench_flat.py [--repeat N] [--dtype float32] [--threads N]

The model is a nested dict/list tree with torchvision's resnet50 parameter
shapes (161 arrays, 25,557,032 numbers): conv weights, batch-norm weight and
bias, and the final fully-connected layer.

The operations are timed round-robin (one run of each per round, so that all
see the same machine), after ``--warmup`` rounds: on a virtual machine the
first touches of fresh memory can cost many times what later ones do. Each
figure is the median (and the minimum) over ``--repeat`` rounds; the ratio
column divides medians by that of ``numpy.copyto`` between two existing arrays
of the flat vector's size: one memcpy of the same bytes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import numpy as np

import optimisers
from optimisers import _core


def resnet50_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """torchvision.models.resnet50's trainable parameters, in its order."""
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("conv1.weight", (64, 3, 7, 7)),
        ("bn1.weight", (64,)),
        ("bn1.bias", (64,)),
    ]
    inplanes = 64
    for layer, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            pre = f"layer{layer}.{b}"
            shapes += [
                (f"{pre}.conv1.weight", (planes, inplanes, 1, 1)),
                (f"{pre}.bn1.weight", (planes,)),
                (f"{pre}.bn1.bias", (planes,)),
                (f"{pre}.conv2.weight", (planes, planes, 3, 3)),
                (f"{pre}.bn2.weight", (planes,)),
                (f"{pre}.bn2.bias", (planes,)),
                (f"{pre}.conv3.weight", (planes * 4, planes, 1, 1)),
                (f"{pre}.bn3.weight", (planes * 4,)),
                (f"{pre}.bn3.bias", (planes * 4,)),
            ]
            if b == 0:
                shapes += [
                    (f"{pre}.downsample.0.weight", (planes * 4, inplanes, 1, 1)),
                    (f"{pre}.downsample.1.weight", (planes * 4,)),
                    (f"{pre}.downsample.1.bias", (planes * 4,)),
                ]
            inplanes = planes * 4
    shapes += [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]
    return shapes


def nested(named: dict[str, np.ndarray]) -> dict:
    """``{"layer1.0.conv1.weight": a}`` as nested dicts, with lists for the
    numbered blocks, as a model tree would be."""
    root: dict = {}
    for name, a in named.items():
        node = root
        parts = name.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = a

    def lists(x):
        if isinstance(x, dict):
            if x and all(k.isdigit() for k in x):
                return [lists(x[k]) for k in sorted(x, key=int)]
            return {k: lists(v) for k, v in x.items()}
        return x

    return lists(root)


def round_robin(ops: list, repeat: int, warmup: int) -> list[tuple[str, float, float]]:
    """``(name, median ms, min ms)`` for each ``(name, f)`` in ``ops``, timed in rounds."""
    times: list[list[float]] = [[] for _ in ops]
    for r in range(warmup + repeat):
        for (_, f), ts in zip(ops, times):
            t0 = time.perf_counter()
            f()
            if r >= warmup:
                ts.append(time.perf_counter() - t0)
    return [(name, statistics.median(ts) * 1e3, min(ts) * 1e3) for (name, _), ts in zip(ops, times)]


def copy_each(flat: np.ndarray, arrays: list[np.ndarray]) -> None:
    """What ``destructure`` does, in NumPy, into an existing vector."""
    at = 0
    for a in arrays:
        flat[at : at + a.size] = a.reshape(-1)
        at += a.size


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", "?").strip()
        cpus = fields.get("CPU(s)", "?").strip()
        return f"{model}, {cpus} CPUs"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        optimisers.set_num_threads(args.threads)

    dtype = np.dtype(args.dtype)
    shapes = resnet50_shapes()
    rng = np.random.default_rng(0)

    def random(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)

    named = {name: random(shape) for name, shape in shapes}
    model = nested(named)
    grad = nested({name: random(a.shape) for name, a in named.items()})
    n = sum(a.size for a in named.values())
    assert len(shapes) == 161 and n == 25_557_032, (len(shapes), n)

    flat, re = optimisers.destructure(model)
    src, dst = flat.copy(), np.empty_like(flat)
    np.copyto(dst, src)

    arrays = list(named.values())
    raveled = [a.reshape(-1) for a in arrays]

    ops = [
        ("memcpy: numpy.copyto into an existing array", lambda: np.copyto(dst, src)),
        ("memcpy: flat.copy() (allocates)", lambda: src.copy()),
        (
            "memcpy: Rust on the pool, into an existing array",
            lambda: _core.scatter(src, [(0, dst)]),
        ),
        ("NumPy: the 161 arrays copied into an existing flat", lambda: copy_each(dst, arrays)),
        ("NumPy: np.concatenate of the 161 raveled arrays", lambda: np.concatenate(raveled)),
        ("destructure(model)", lambda: optimisers.destructure(model)),
        ("re(flat)", lambda: re(flat)),
        ("re(flat, copy=False)", lambda: re(flat, copy=False)),
        ("re.flatten(grad)", lambda: re.flatten(grad)),
    ]
    rows = round_robin(ops, args.repeat, args.warmup)
    t_memcpy = rows[0][1]

    # Check what was timed.
    back = re(flat)
    assert all(np.array_equal(a, b) for a, b in zip(optimisers.trainables(back), named.values()))
    assert np.array_equal(re.flatten(grad), optimisers.destructure(grad)[0])

    print(f"machine: {machine()}; threads: {optimisers.get_num_threads()}; numpy {np.__version__}")
    print(
        f"ResNet-50: {len(shapes)} arrays, {n:,} {dtype} = {flat.nbytes / 1e6:.1f} MB; "
        f"{args.repeat} rounds after {args.warmup} warm-up rounds"
    )
    print()
    print(f"| {'operation':<50} | {'median ms':>9} | {'min ms':>8} | {'× memcpy':>8} |")
    print(f"|{'-' * 52}|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
    for name, med, low in rows:
        print(f"| {name:<50} | {med:9.3f} | {low:8.3f} | {med / t_memcpy:8.2f} |")


if __name__ == "__main__":
    main()

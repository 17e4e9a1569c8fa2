"""Flat-vector copies on ResNet-50's parameters: destructure, re(flat),
re(flat, copy=False) and re.flatten, against a memcpy of the same bytes.

    python benches/bench_flat.py [--repeat N] [--dtype float32] [--threads N]

The model is a nested dict/list tree with torchvision's resnet50 parameter
shapes (161 arrays, 25,557,032 numbers): conv weights, batch-norm weight and
bias, and the final fully-connected layer. Every figure is the median of
``--repeat`` runs (after one warm-up); the ratio column divides by the median
of ``numpy.copyto`` between two existing arrays of the flat vector's size.
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


def median_ms(f, repeat: int) -> float:
    f()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


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
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        optimisers.set_num_threads(args.threads)

    dtype = np.dtype(args.dtype)
    shapes = resnet50_shapes()
    rng = np.random.default_rng(0)
    named = {
        name: rng.standard_normal(shape, dtype=np.float32).astype(dtype) for name, shape in shapes
    }
    model = nested(named)
    grad = nested(
        {
            name: rng.standard_normal(a.shape, dtype=np.float32).astype(dtype)
            for name, a in named.items()
        }
    )
    n = sum(a.size for a in named.values())
    assert len(shapes) == 161 and n == 25_557_032, (len(shapes), n)

    flat, re = optimisers.destructure(model)
    src, dst = flat.copy(), np.empty_like(flat)
    np.copyto(dst, src)

    rows = []
    t_memcpy = median_ms(lambda: np.copyto(dst, src), args.repeat)
    rows.append(("memcpy: numpy.copyto into an existing array", t_memcpy))
    rows.append(("memcpy: flat.copy() (allocates)", median_ms(lambda: src.copy(), args.repeat)))
    rows.append(
        (
            "memcpy: Rust, on the pool (_core.scatter, 1 part)",
            median_ms(lambda: _core.scatter(src, [(0, dst)]), args.repeat),
        )
    )
    rows.append(
        ("destructure(model)", median_ms(lambda: optimisers.destructure(model), args.repeat))
    )
    rows.append(("re(flat)", median_ms(lambda: re(flat), args.repeat)))
    rows.append(("re(flat, copy=False)", median_ms(lambda: re(flat, copy=False), args.repeat)))
    rows.append(("re.flatten(grad)", median_ms(lambda: re.flatten(grad), args.repeat)))

    # Check what was timed.
    back = re(flat)
    assert all(np.array_equal(a, b) for a, b in zip(optimisers.trainables(back), named.values()))
    assert np.array_equal(re.flatten(grad), optimisers.destructure(grad)[0])

    print(f"machine: {machine()}; threads: {optimisers.get_num_threads()}; numpy {np.__version__}")
    print(
        f"ResNet-50: {len(shapes)} arrays, {n:,} {dtype} = {flat.nbytes / 1e6:.1f} MB; "
        f"median of {args.repeat}"
    )
    print()
    print(f"| {'operation':<52} | {'ms':>8} | {'× memcpy':>8} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 10}|")
    for name, ms in rows:
        print(f"| {name:<52} | {ms:8.3f} | {ms / t_memcpy:8.2f} |")


if __name__ == "__main__":
    main()

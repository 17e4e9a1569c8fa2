"""Time one ``update_`` step of every rule, next to this machine's memory bandwidth.

    python benches/bench_step.py                      # everything (~6 min on 2 cores)
    python benches/bench_step.py --rules Adam,Lion --dtypes float32 --workloads flat,many
    python benches/bench_step.py --list               # the rule and workload names

The rules are every rule of the package plus two chains,
``ClipGrad+WeightDecay+Adam`` = ``OptimiserChain(ClipGrad(), WeightDecay(), Adam())``
and ``ClipNorm+Adam`` = ``OptimiserChain(ClipNorm(), Adam())``, all with their
default hyper-parameters. Each row is one rule on one workload and dtype,
timed as the median of many steps after a warm-up (the gradient alternates
between g and -g), in alternation with the roofline kernel below (this VM's
speed drifts by tens of percent within seconds: only ratios of timings taken
in turn are steady), with, from the same run:

- GB/s and % BW: the bytes the rule must move (elements × dtype size × arrays
  read and written: x, the gradient, each state array; a norm reads the
  gradient once more) over the time, as a fraction of the memory bandwidth
  measured here by a multi-threaded copy kernel with non-temporal stores
  (``optimisers._core._copy``);
- × roof: the time over that of a hand-written multi-threaded kernel moving
  Adam's bytes with trivial arithmetic (``optimisers._core._roofline``,
  prefetching as the rule kernels do) on the
  workload's element count in one buffer (its m and v made by ``setup``, so
  that they lie in memory as the rules' state arrays do), timed in turn with
  the row, and scaled by this rule's bytes over Adam's;
- the same step in plain in-place NumPy (``benches/numpy_rules.py``), in optax
  (``jax.jit``, buffers donated) and in ``torch.optim`` (``foreach`` and
  ``fused``) where those are installed and have the rule, with their time over ours.

Each workload and dtype runs in a fresh Python process, ours first for every
rule and then the others, so that our model's arrays lie in memory as a
training script's would (see `bench_workload`).

Flat and resnet50 Adam float32 are also timed in alternation with torch's
fused Adam, for the targets against it, the two chains with Adam alone, for
theirs, and on the ``cache`` workload each
rule is timed in alternation on one thread and on ``--threads``, for the
thread-scaling table. The table is printed (Markdown), with the issue's
targets checked at the end; ``--out`` writes a plot (with matplotlib) and
``--md`` a Markdown report with the machine, the command and the versions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from numpy_rules import NumpyOptimiser

import optimisers as o
from optimisers import _core

# ---------------------------------------------------------------------------
# Workloads: lists of (name, shape).

# The 161 parameter arrays of torchvision's resnet50 (25,557,032 parameters),
# in `named_parameters()` order.
RESNET50 = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1.weight", (64,)),
    ("bn1.bias", (64,)),
    ("layer1.0.conv1.weight", (64, 64, 1, 1)),
    ("layer1.0.bn1.weight", (64,)),
    ("layer1.0.bn1.bias", (64,)),
    ("layer1.0.conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.bn2.weight", (64,)),
    ("layer1.0.bn2.bias", (64,)),
    ("layer1.0.conv3.weight", (256, 64, 1, 1)),
    ("layer1.0.bn3.weight", (256,)),
    ("layer1.0.bn3.bias", (256,)),
    ("layer1.0.downsample.0.weight", (256, 64, 1, 1)),
    ("layer1.0.downsample.1.weight", (256,)),
    ("layer1.0.downsample.1.bias", (256,)),
    ("layer1.1.conv1.weight", (64, 256, 1, 1)),
    ("layer1.1.bn1.weight", (64,)),
    ("layer1.1.bn1.bias", (64,)),
    ("layer1.1.conv2.weight", (64, 64, 3, 3)),
    ("layer1.1.bn2.weight", (64,)),
    ("layer1.1.bn2.bias", (64,)),
    ("layer1.1.conv3.weight", (256, 64, 1, 1)),
    ("layer1.1.bn3.weight", (256,)),
    ("layer1.1.bn3.bias", (256,)),
    ("layer1.2.conv1.weight", (64, 256, 1, 1)),
    ("layer1.2.bn1.weight", (64,)),
    ("layer1.2.bn1.bias", (64,)),
    ("layer1.2.conv2.weight", (64, 64, 3, 3)),
    ("layer1.2.bn2.weight", (64,)),
    ("layer1.2.bn2.bias", (64,)),
    ("layer1.2.conv3.weight", (256, 64, 1, 1)),
    ("layer1.2.bn3.weight", (256,)),
    ("layer1.2.bn3.bias", (256,)),
    ("layer2.0.conv1.weight", (128, 256, 1, 1)),
    ("layer2.0.bn1.weight", (128,)),
    ("layer2.0.bn1.bias", (128,)),
    ("layer2.0.conv2.weight", (128, 128, 3, 3)),
    ("layer2.0.bn2.weight", (128,)),
    ("layer2.0.bn2.bias", (128,)),
    ("layer2.0.conv3.weight", (512, 128, 1, 1)),
    ("layer2.0.bn3.weight", (512,)),
    ("layer2.0.bn3.bias", (512,)),
    ("layer2.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer2.0.downsample.1.weight", (512,)),
    ("layer2.0.downsample.1.bias", (512,)),
    ("layer2.1.conv1.weight", (128, 512, 1, 1)),
    ("layer2.1.bn1.weight", (128,)),
    ("layer2.1.bn1.bias", (128,)),
    ("layer2.1.conv2.weight", (128, 128, 3, 3)),
    ("layer2.1.bn2.weight", (128,)),
    ("layer2.1.bn2.bias", (128,)),
    ("layer2.1.conv3.weight", (512, 128, 1, 1)),
    ("layer2.1.bn3.weight", (512,)),
    ("layer2.1.bn3.bias", (512,)),
    ("layer2.2.conv1.weight", (128, 512, 1, 1)),
    ("layer2.2.bn1.weight", (128,)),
    ("layer2.2.bn1.bias", (128,)),
    ("layer2.2.conv2.weight", (128, 128, 3, 3)),
    ("layer2.2.bn2.weight", (128,)),
    ("layer2.2.bn2.bias", (128,)),
    ("layer2.2.conv3.weight", (512, 128, 1, 1)),
    ("layer2.2.bn3.weight", (512,)),
    ("layer2.2.bn3.bias", (512,)),
    ("layer2.3.conv1.weight", (128, 512, 1, 1)),
    ("layer2.3.bn1.weight", (128,)),
    ("layer2.3.bn1.bias", (128,)),
    ("layer2.3.conv2.weight", (128, 128, 3, 3)),
    ("layer2.3.bn2.weight", (128,)),
    ("layer2.3.bn2.bias", (128,)),
    ("layer2.3.conv3.weight", (512, 128, 1, 1)),
    ("layer2.3.bn3.weight", (512,)),
    ("layer2.3.bn3.bias", (512,)),
    ("layer3.0.conv1.weight", (256, 512, 1, 1)),
    ("layer3.0.bn1.weight", (256,)),
    ("layer3.0.bn1.bias", (256,)),
    ("layer3.0.conv2.weight", (256, 256, 3, 3)),
    ("layer3.0.bn2.weight", (256,)),
    ("layer3.0.bn2.bias", (256,)),
    ("layer3.0.conv3.weight", (1024, 256, 1, 1)),
    ("layer3.0.bn3.weight", (1024,)),
    ("layer3.0.bn3.bias", (1024,)),
    ("layer3.0.downsample.0.weight", (1024, 512, 1, 1)),
    ("layer3.0.downsample.1.weight", (1024,)),
    ("layer3.0.downsample.1.bias", (1024,)),
    ("layer3.1.conv1.weight", (256, 1024, 1, 1)),
    ("layer3.1.bn1.weight", (256,)),
    ("layer3.1.bn1.bias", (256,)),
    ("layer3.1.conv2.weight", (256, 256, 3, 3)),
    ("layer3.1.bn2.weight", (256,)),
    ("layer3.1.bn2.bias", (256,)),
    ("layer3.1.conv3.weight", (1024, 256, 1, 1)),
    ("layer3.1.bn3.weight", (1024,)),
    ("layer3.1.bn3.bias", (1024,)),
    ("layer3.2.conv1.weight", (256, 1024, 1, 1)),
    ("layer3.2.bn1.weight", (256,)),
    ("layer3.2.bn1.bias", (256,)),
    ("layer3.2.conv2.weight", (256, 256, 3, 3)),
    ("layer3.2.bn2.weight", (256,)),
    ("layer3.2.bn2.bias", (256,)),
    ("layer3.2.conv3.weight", (1024, 256, 1, 1)),
    ("layer3.2.bn3.weight", (1024,)),
    ("layer3.2.bn3.bias", (1024,)),
    ("layer3.3.conv1.weight", (256, 1024, 1, 1)),
    ("layer3.3.bn1.weight", (256,)),
    ("layer3.3.bn1.bias", (256,)),
    ("layer3.3.conv2.weight", (256, 256, 3, 3)),
    ("layer3.3.bn2.weight", (256,)),
    ("layer3.3.bn2.bias", (256,)),
    ("layer3.3.conv3.weight", (1024, 256, 1, 1)),
    ("layer3.3.bn3.weight", (1024,)),
    ("layer3.3.bn3.bias", (1024,)),
    ("layer3.4.conv1.weight", (256, 1024, 1, 1)),
    ("layer3.4.bn1.weight", (256,)),
    ("layer3.4.bn1.bias", (256,)),
    ("layer3.4.conv2.weight", (256, 256, 3, 3)),
    ("layer3.4.bn2.weight", (256,)),
    ("layer3.4.bn2.bias", (256,)),
    ("layer3.4.conv3.weight", (1024, 256, 1, 1)),
    ("layer3.4.bn3.weight", (1024,)),
    ("layer3.4.bn3.bias", (1024,)),
    ("layer3.5.conv1.weight", (256, 1024, 1, 1)),
    ("layer3.5.bn1.weight", (256,)),
    ("layer3.5.bn1.bias", (256,)),
    ("layer3.5.conv2.weight", (256, 256, 3, 3)),
    ("layer3.5.bn2.weight", (256,)),
    ("layer3.5.bn2.bias", (256,)),
    ("layer3.5.conv3.weight", (1024, 256, 1, 1)),
    ("layer3.5.bn3.weight", (1024,)),
    ("layer3.5.bn3.bias", (1024,)),
    ("layer4.0.conv1.weight", (512, 1024, 1, 1)),
    ("layer4.0.bn1.weight", (512,)),
    ("layer4.0.bn1.bias", (512,)),
    ("layer4.0.conv2.weight", (512, 512, 3, 3)),
    ("layer4.0.bn2.weight", (512,)),
    ("layer4.0.bn2.bias", (512,)),
    ("layer4.0.conv3.weight", (2048, 512, 1, 1)),
    ("layer4.0.bn3.weight", (2048,)),
    ("layer4.0.bn3.bias", (2048,)),
    ("layer4.0.downsample.0.weight", (2048, 1024, 1, 1)),
    ("layer4.0.downsample.1.weight", (2048,)),
    ("layer4.0.downsample.1.bias", (2048,)),
    ("layer4.1.conv1.weight", (512, 2048, 1, 1)),
    ("layer4.1.bn1.weight", (512,)),
    ("layer4.1.bn1.bias", (512,)),
    ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ("layer4.1.bn2.weight", (512,)),
    ("layer4.1.bn2.bias", (512,)),
    ("layer4.1.conv3.weight", (2048, 512, 1, 1)),
    ("layer4.1.bn3.weight", (2048,)),
    ("layer4.1.bn3.bias", (2048,)),
    ("layer4.2.conv1.weight", (512, 2048, 1, 1)),
    ("layer4.2.bn1.weight", (512,)),
    ("layer4.2.bn1.bias", (512,)),
    ("layer4.2.conv2.weight", (512, 512, 3, 3)),
    ("layer4.2.bn2.weight", (512,)),
    ("layer4.2.bn2.bias", (512,)),
    ("layer4.2.conv3.weight", (2048, 512, 1, 1)),
    ("layer4.2.bn3.weight", (2048,)),
    ("layer4.2.bn3.bias", (2048,)),
    ("fc.weight", (1000, 2048)),
    ("fc.bias", (1000,)),
]

# A 3-layer MLP 64 → 64 → 40 → 10 (PyTorch's (out, in) weights): 6 arrays, 7,170 parameters.
MLP = [
    ("0.weight", (64, 64)),
    ("0.bias", (64,)),
    ("1.weight", (40, 64)),
    ("1.bias", (40,)),
    ("2.weight", (10, 40)),
    ("2.bias", (10,)),
]

WORKLOADS: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "flat": [("w", (2**25,))],
    "resnet50": RESNET50,
    "many": [(str(i), (1000,)) for i in range(1000)],
    "mlp": MLP,
    "cache": [("w", (2**18,))],
}

WORKLOAD_NOTES = {
    "flat": "one vector of 2^25 elements",
    "resnet50": "ResNet-50's 161 arrays, 25.6M elements",
    "many": "1,000 arrays of 1,000 elements",
    "mlp": "3-layer MLP, 6 arrays, 7,170 elements",
    "cache": "one vector of 2^18 elements (in cache)",
}

# (steps timed for ours, for the others): the big workloads get fewer.
REPEATS = {
    "flat": (10, 3),
    "resnet50": (10, 3),
    "many": (100, 15),
    "mlp": (2000, 300),
    "cache": (300, 40),
}
# At most this many seconds of timed steps per measurement (at least 3 steps).
BUDGET = 1.0
# With `--others headline` (the default), optax and torch are timed for every
# rule only on these workloads, and for Adam and the chains on the others:
# jit-compiling 1,000 leaves takes optax ~10 s per rule here.
CHEAP_TO_COMPILE = ("flat", "cache", "mlp")

# ---------------------------------------------------------------------------
# Rules: name → (rule, state arrays, extra reads of the gradient by norms).


def _rules() -> dict[str, tuple[Any, int, int]]:
    return {
        "Descent": (o.Descent(), 0, 0),
        "Momentum": (o.Momentum(), 1, 0),
        "Nesterov": (o.Nesterov(), 1, 0),
        "Rprop": (o.Rprop(), 2, 0),
        "RMSProp": (o.RMSProp(), 1, 0),
        "RMSProp(centred)": (o.RMSProp(centred=True), 2, 0),
        "Adam": (o.Adam(), 2, 0),
        "RAdam": (o.RAdam(), 2, 0),
        "AdaMax": (o.AdaMax(), 2, 0),
        "OAdam": (o.OAdam(), 3, 0),
        "AdaGrad": (o.AdaGrad(), 1, 0),
        "AdaDelta": (o.AdaDelta(), 2, 0),
        "AMSGrad": (o.AMSGrad(), 3, 0),
        "NAdam": (o.NAdam(), 2, 0),
        "AdamW": (o.AdamW(), 2, 0),
        "AdaBelief": (o.AdaBelief(), 2, 0),
        "Lion": (o.Lion(), 1, 0),
        "WeightDecay": (o.WeightDecay(), 0, 0),
        "SignDecay": (o.SignDecay(), 0, 0),
        "ClipGrad": (o.ClipGrad(), 0, 0),
        "ClipNorm": (o.ClipNorm(), 0, 1),
        CHAIN_ELEMENTWISE: (o.OptimiserChain(o.ClipGrad(), o.WeightDecay(), o.Adam()), 2, 0),
        CHAIN_NORM: (o.OptimiserChain(o.ClipNorm(), o.Adam()), 2, 1),
    }


CHAIN_ELEMENTWISE = "ClipGrad+WeightDecay+Adam"
CHAIN_NORM = "ClipNorm+Adam"
RULES = _rules()


def traffic(name: str) -> int:
    """Arrays moved per element: read x, the gradient and each state array
    (the gradient again per norm); write x and each state array."""
    _, states, norms = RULES[name]
    return (2 + states + norms) + (1 + states)


# ---------------------------------------------------------------------------
# Timing.


#: Seconds of quiet before each measurement (see `measure`).
SETTLE = 0.05
#: Seconds of quiet before each step of a pairing with torch (see `alternated`).
PAUSE = 0.02


def measure(
    step: Callable[[], Any], repeats: int, warmup: int = 2, budget: float | None = None
) -> float:
    """Median seconds of one call of `step`, after `warmup` calls; stops early
    once `budget` seconds have been spent, with at least 3 calls timed.

    It first waits `SETTLE` seconds: thread pools that spin after their work
    (ours, JAX's, OpenBLAS's) would otherwise take the second core from
    whatever is timed next on a 2-core machine."""
    time.sleep(SETTLE)
    for _ in range(warmup):
        step()
    budget = BUDGET if budget is None else budget
    times: list[float] = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        spent = 0.0
        while len(times) < repeats and (len(times) < 3 or spent < budget):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            spent += times[-1]
    finally:
        if enabled:
            gc.enable()
    return statistics.median(times)


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


# ---------------------------------------------------------------------------
# Reference kernels: bandwidth and roofline.


def copy_bandwidth(threads: int, stream: bool = True, n: int = 2**26) -> float:
    """Bytes per second of `_core._copy` over 2 × n float32 (read + write counted)."""
    src = np.arange(n, dtype=np.float32)
    dst = np.empty_like(src)
    s8, d8 = src.view(np.uint8), dst.view(np.uint8)
    o.set_num_threads(threads)
    t = measure(lambda: _core._copy(d8, s8, stream), 15, warmup=2, budget=3.0)
    assert np.array_equal(src[:1000], dst[:1000])
    return 2 * src.nbytes / t


def roofline_step(size: int, dtype: np.dtype) -> Callable[[], None]:
    """The roofline kernel on x, g, m, v of `size` elements, with m and v made
    by `setup`, so that they lie in memory as the rules' state arrays do."""
    rng = np.random.default_rng(1)
    x, g = (rng.standard_normal(size, dtype=dtype) for _ in range(2))
    m, v, _ = o.setup(o.Adam(), x).state
    return lambda: _core._roofline(x, g, m, v)


def alternated(
    steps: list[Callable[[], Any]],
    rounds: int,
    pause: float = 0.0,
    batch: int = 1,
    before: list[Callable[[], Any]] | None = None,
) -> list[float]:
    """Median seconds per call of each of `steps`, timed in turn: `rounds`
    rounds, each timing `batch` calls of each step, one step after the other.
    On a shared machine whose speed drifts by tens of percent within seconds,
    a ratio of alternated timings is the one to trust. A batch (of more than
    one call) starts with an untimed call, which brings the step's data back
    into cache after the other step ran: each step is timed as it runs back
    to back, as the other libraries are. With `pause`, each
    batch is timed after that many seconds of quiet: when the steps run on
    different thread pools (ours and torch's OpenMP), each pool's threads spin
    for a while after their work and would otherwise take the second core from
    the next step. `before[i]`, if given, runs untimed before each batch of
    `steps[i]` (a thread count to set, say)."""
    prepare = before or [lambda: None for _ in steps]
    for ready, step in zip(prepare, steps):
        ready()
        step()
    time.sleep(SETTLE)
    times: list[list[float]] = [[] for _ in steps]
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for ready, step, ts in zip(prepare, steps, times):
                ready()
                if pause:
                    time.sleep(pause)
                if batch > 1:
                    step()
                start = time.perf_counter()
                for _ in range(batch):
                    step()
                ts.append((time.perf_counter() - start) / batch)
    finally:
        if enabled:
            gc.enable()
    return [statistics.median(ts) for ts in times]


def paired_rounds(repeats: int) -> tuple[int, int]:
    """`(rounds, batch)` for `alternated` from a workload's repeat count: at
    most 10 rounds, so that a fast workload times batches of steps."""
    rounds = min(repeats, 10)
    return rounds, max(1, repeats // rounds)


# ---------------------------------------------------------------------------
# The others: optax and torch, where installed and where they have the rule.


def _have(module: str) -> bool:
    try:
        __import__(module)
    except Exception:
        return False
    return True


def optax_transform(name: str) -> Any:
    """The optax transformation for a rule, or None where optax has none."""
    import optax

    rule = RULES[name][0]

    def lr1(*tx: Any) -> Any:  # rules without a learning rate step by the update itself
        return optax.chain(*tx, optax.scale(-1.0))

    adam_like = {
        "Adam": optax.adam,
        "RAdam": optax.radam,
        "AdaMax": optax.adamax,
        "AMSGrad": optax.amsgrad,
        "NAdam": optax.nadam,
        "AdaBelief": optax.adabelief,
    }
    if name in adam_like:
        return adam_like[name](rule.eta, b1=rule.beta[0], b2=rule.beta[1], eps=rule.epsilon)
    if name == "Descent":
        return optax.sgd(rule.eta)
    if name in ("Momentum", "Nesterov"):
        return optax.sgd(rule.eta, momentum=rule.rho, nesterov=name == "Nesterov")
    if name == "Rprop":
        return optax.rprop(rule.eta, rule.ell[0], rule.ell[1], rule.gamma[0], rule.gamma[1])
    if name.startswith("RMSProp"):
        return optax.rmsprop(
            rule.eta, rule.rho, rule.epsilon, eps_in_sqrt=False, centered=rule.centred
        )
    if name == "OAdam":
        return optax.optimistic_adam(rule.eta, b1=rule.beta[0], b2=rule.beta[1], eps=rule.epsilon)
    if name == "AdamW":
        b1, b2 = rule.beta
        return optax.adamw(rule.eta, b1=b1, b2=b2, eps=rule.epsilon, weight_decay=rule.lambda_)
    if name == "AdaGrad":
        return optax.adagrad(rule.eta, initial_accumulator_value=rule.epsilon, eps=rule.epsilon)
    if name == "AdaDelta":
        return optax.adadelta(1.0, rule.rho, rule.epsilon)
    if name == "Lion":
        return optax.lion(rule.eta, b1=rule.beta[0], b2=rule.beta[1], weight_decay=0.0)
    if name == "WeightDecay":
        return lr1(optax.add_decayed_weights(rule.lambda_))
    if name == "ClipGrad":
        return lr1(optax.clip(rule.delta))
    if name == "ClipNorm":  # per-array RMS clip: the same traffic as a per-array norm
        return lr1(optax.clip_by_block_rms(rule.omega))
    if name == CHAIN_ELEMENTWISE:
        return optax.chain(optax.clip(10.0), optax.add_decayed_weights(5e-4), optax.adam(1e-3))
    if name == CHAIN_NORM:
        return optax.chain(optax.clip_by_block_rms(10.0), optax.adam(1e-3))
    return None  # SignDecay


def optax_runner(
    name: str, params: list[np.ndarray], pair_of_grads: Grads
) -> Callable[[], Any] | None:
    import functools

    import jax
    import optax

    tx = optax_transform(name)
    if tx is None:
        return None
    ps = [jax.device_put(x) for x in params]
    pair = [[jax.device_put(g) for g in grads] for grads in pair_of_grads]
    box: list[Any] = [ps, tx.init(ps), 0]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(ps, state, gs):
        updates, state = tx.update(gs, state, ps)
        return optax.apply_updates(ps, updates), state

    def run() -> None:
        box[2] ^= 1
        box[0], box[1] = step(box[0], box[1], pair[box[2]])
        jax.block_until_ready(box[0])

    return run


def torch_runner(
    name: str, params: list[np.ndarray], grads: Grads, mode: str
) -> Callable[[], Any] | None:
    """torch.optim with `foreach=True` or `fused=True`; None where it has no such rule.
    The gradient stays `g` (torch reads it from `.grad`; swapping 1,000 of those
    per step would be timed as torch's), a copy of it: some of torch's rules
    write into `.grad` (SGD with Nesterov momentum adds the momentum to it)."""
    import torch

    rule = RULES[name][0]
    ps = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in params]
    for p, g in zip(ps, grads[0]):
        p.grad = torch.from_numpy(g.copy())
    flag = {mode: True}
    opt = torch.optim
    before: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if name == "Descent":
            optim = opt.SGD(ps, lr=rule.eta, **flag)
        elif name in ("Momentum", "Nesterov"):
            optim = opt.SGD(ps, lr=rule.eta, momentum=rule.rho, nesterov=name == "Nesterov", **flag)
        elif name == "Rprop":
            optim = opt.Rprop(ps, lr=rule.eta, etas=rule.ell, step_sizes=rule.gamma, **flag)
        elif name.startswith("RMSProp"):
            optim = opt.RMSprop(
                ps, lr=rule.eta, alpha=rule.rho, eps=rule.epsilon, centered=rule.centred, **flag
            )
        elif name in ("Adam", "AMSGrad", "RAdam", "AdaMax", "NAdam", "AdamW"):
            cls = {
                "Adam": opt.Adam,
                "AMSGrad": opt.Adam,
                "RAdam": opt.RAdam,
                "AdaMax": opt.Adamax,
                "NAdam": opt.NAdam,
                "AdamW": opt.AdamW,
            }[name]
            extra = {"amsgrad": True} if name == "AMSGrad" else {}
            if name == "AdamW":
                extra = {"weight_decay": rule.lambda_}
            optim = cls(ps, lr=rule.eta, betas=rule.beta, eps=rule.epsilon, **extra, **flag)
        elif name == "AdaGrad":
            optim = opt.Adagrad(
                ps, lr=rule.eta, initial_accumulator_value=rule.epsilon, eps=rule.epsilon, **flag
            )
        elif name == "AdaDelta":
            optim = opt.Adadelta(ps, lr=1.0, rho=rule.rho, eps=rule.epsilon, **flag)
        elif (
            name == CHAIN_ELEMENTWISE
        ):  # clip in place, then Adam with L2 decay (= WeightDecay → Adam)
            optim = opt.Adam(ps, lr=1e-3, weight_decay=5e-4, **flag)

            def before() -> None:
                torch.nn.utils.clip_grad_value_(ps, 10.0, foreach=True)

        elif name == CHAIN_NORM:  # a per-array norm clip, then Adam
            optim = opt.Adam(ps, lr=1e-3, **flag)

            def before() -> None:
                for p in ps:
                    torch.nn.utils.clip_grad_norm_([p], 10.0)

        else:
            return None
    except (TypeError, RuntimeError, ValueError):
        return None  # this torch has no such variant

    def run() -> None:
        before()
        optim.step()

    try:
        run()
    except RuntimeError:
        return None
    return run


# ---------------------------------------------------------------------------
# One workload and dtype.


@dataclass
class Row:
    workload: str
    dtype: str
    rule: str
    elements: int
    bytes: int
    ours: float
    roofline: float  # for Adam's bytes on this workload and dtype, timed in alternation with ours
    # (ours with --threads, ours with 1 thread) timed in alternation (cache only).
    scaling: tuple[float, float] | None = None
    others: dict[str, float | None] = field(default_factory=dict)
    # (ours, torch fused) timed in alternation (flat and resnet50 Adam, float32).
    paired_torch: tuple[float, float] | None = None
    # (this chain, Adam alone) timed in alternation (the two chains of the targets).
    paired_adam: tuple[float, float] | None = None

    def gbps(self) -> float:
        return self.bytes / self.ours / 1e9

    def floor(self) -> float:
        """The roofline kernel's time for this rule's bytes."""
        return self.roofline * traffic(self.rule) / traffic("Adam")

    def roof_ratio(self) -> float:
        return self.ours / self.floor()


# The gradients: g and -g, used in turn, so that no rule settles into a
# degenerate state (a constant gradient drives centred RMSProp's variance to
# zero and below, by rounding).
Grads = tuple[list[np.ndarray], list[np.ndarray]]


def make_data(workload: str, dtype: np.dtype) -> tuple[list[str], list[np.ndarray], Grads]:
    rng = np.random.default_rng(42)
    names = [n for n, _ in WORKLOADS[workload]]
    shapes = [s for _, s in WORKLOADS[workload]]
    xs = [rng.standard_normal(s, dtype=dtype) for s in shapes]
    gs = [rng.standard_normal(s, dtype=dtype) for s in shapes]
    return names, xs, (gs, [-g for g in gs])


def ours_step(rule: Any, names: list[str], xs: list[np.ndarray], gs: Grads) -> Callable[[], None]:
    """One `update_` step per call, on a fresh model and state, alternating g and -g."""
    if len(names) == len(set(names)) and not names[0].isdigit():
        model: Any = {n: x.copy() for n, x in zip(names, xs)}
        pair: Any = [dict(zip(names, g)) for g in gs]
    else:
        model, pair = [x.copy() for x in xs], [list(g) for g in gs]
    box = [o.setup(rule, model), model, 0]

    def step() -> None:
        box[2] ^= 1
        box[0], box[1] = o.update_(box[0], box[1], pair[box[2]])

    return step


def numpy_runner(rule: Any, xs: list[np.ndarray], gs: Grads) -> Callable[[], None]:
    params = [x.copy() for x in xs]
    nopt = NumpyOptimiser(rule, params)
    turn = [0]

    def step() -> None:
        turn[0] ^= 1
        nopt.step(params, gs[turn[0]])

    return step


def bench_workload(
    workload: str, dtype: np.dtype, args: argparse.Namespace, others: dict[str, bool]
) -> list[Row]:
    """Every rule on one workload and dtype: ours first, for every rule, then
    the others. A model of many small leaves is only as fast as the memory
    its arrays land in: copies made after NumPy, optax and torch have
    allocated and freed much land strewn over gigabytes of a churned heap,
    and each step then pays page walks (1,000 x 1,000 Adam float32 stepped
    2-3x slower). Timing ours first keeps our copies where a training
    script's model would be, made early."""
    names, xs, gs = make_data(workload, dtype)
    elements = sum(x.size for x in xs)
    ours_reps, other_reps = REPEATS[workload]
    if args.repeats:
        ours_reps = other_reps = args.repeats
    o.set_num_threads(args.threads)
    roof_step = roofline_step(elements, dtype)
    rounds, batch = paired_rounds(ours_reps)
    rows = []
    for name in args.rules:
        rule = RULES[name][0]
        nbytes = elements * dtype.itemsize * traffic(name)
        # Every row is timed in alternation with the roofline kernel, so that
        # its "× roof" is a ratio from the same moments of this noisy machine.
        steps = [ours_step(rule, names, xs, gs), roof_step]
        if name in (CHAIN_ELEMENTWISE, CHAIN_NORM):
            # A chain's target is a ratio to Adam alone: timed in turn too.
            steps.append(ours_step(RULES["Adam"][0], names, xs, gs))
        ours, roof, *adam = alternated(steps, rounds, batch=batch)
        row = Row(workload, dtype.name, name, elements, nbytes, ours, roof)
        if adam:
            row.paired_adam = (ours, adam[0])
        if workload == "cache" and args.threads > 1:
            threads = (args.threads, 1)
            timed = alternated(
                [ours_step(rule, names, xs, gs), ours_step(rule, names, xs, gs)],
                rounds,
                batch=batch,
                before=[functools.partial(o.set_num_threads, n) for n in threads],
            )
            o.set_num_threads(args.threads)
            row.scaling = (timed[0], timed[1])
        gc.collect()
        rows.append(row)
        print(
            f"  {workload:8s} {dtype.name:7s} {name:34s} {fmt_time(ours):>10s}  "
            f"{row.gbps():6.1f} GB/s  ×roof {row.roof_ratio():5.2f}",
            file=sys.stderr,
            flush=True,
        )
    for row in rows:
        time_others(row, xs, gs, names, rounds, batch, other_reps, args, others)
    return rows


def time_others(
    row: Row,
    xs: list[np.ndarray],
    gs: Grads,
    names: list[str],
    rounds: int,
    batch: int,
    repeats: int,
    args: argparse.Namespace,
    others: dict[str, bool],
) -> None:
    """Fill `row.others` (and `row.paired_torch`) from NumPy, optax and torch."""
    name, workload = row.rule, row.workload
    rule = RULES[name][0]
    if (
        workload in ("flat", "resnet50")
        and name == "Adam"
        and row.dtype == "float32"
        and others.get("torch")
    ):
        fused = torch_runner(name, xs, gs, "fused")
        if fused is not None:
            ours_time, torch_time = alternated(
                [ours_step(rule, names, xs, gs), fused], rounds, pause=PAUSE, batch=batch
            )
            row.paired_torch = (ours_time, torch_time)
        del fused
    if args.others != "none":
        row.others["NumPy"] = measure(numpy_runner(rule, xs, gs), repeats, warmup=1)
    frameworks = args.others == "all" or (
        args.others == "headline"
        and (workload in CHEAP_TO_COMPILE or name in ("Adam", CHAIN_ELEMENTWISE, CHAIN_NORM))
    )
    if frameworks and others.get("optax"):
        run = optax_runner(name, xs, gs)
        row.others["optax"] = None if run is None else measure(run, repeats, warmup=2)
        del run
    for mode in ("foreach", "fused"):
        if frameworks and others.get("torch"):
            run = torch_runner(name, xs, gs, mode)
            row.others[f"torch {mode}"] = None if run is None else measure(run, repeats)
            del run
    gc.collect()
    if row.others:
        vs = "  ".join(f"{k} {fmt_time(v)}" for k, v in row.others.items() if v is not None)
        print(f"  {workload:8s} {row.dtype:7s} {name:34s} {vs}", file=sys.stderr, flush=True)


def start_worker(budget: float, threads: int, others: dict[str, bool]) -> None:
    """What `main` sets up, again in a fresh process (see `in_fresh_process`)."""
    global BUDGET
    BUDGET = budget
    if others.get("optax"):
        import jax

        # For float64 arrays; float32 arrays stay float32.
        jax.config.update("jax_enable_x64", True)
    if others.get("torch"):
        import torch

        torch.set_num_threads(threads)


def in_fresh_process(
    workload: str, dtype: np.dtype, args: argparse.Namespace, others: dict[str, bool]
) -> list[Row]:
    """`bench_workload` in a new Python process: no workload's arrays land in
    a heap the ones before it churned (as `asv` runs each benchmark)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(
        1, initializer=start_worker, initargs=(args.budget, args.threads, others)
    ) as pool:
        return pool.apply(bench_workload, (workload, dtype, args, others))


# ---------------------------------------------------------------------------
# Checks, report, plot.


def check_numpy_reference(rules: list[str]) -> None:
    """The NumPy baseline must compute what optimisers computes (float64, 5 steps)."""
    rng = np.random.default_rng(7)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    for name in rules:
        rule = RULES[name][0]
        xs = [rng.standard_normal(s) for s in shapes]
        a, b = [x.copy() for x in xs], [x.copy() for x in xs]
        st, nopt = o.setup(rule, a), NumpyOptimiser(rule, b)
        for _ in range(5):
            gs = [rng.standard_normal(s) for s in shapes]
            st, a = o.update_(st, a, gs)
            nopt.step(b, gs)
        for p, q in zip(a, b):
            if not np.allclose(p, q, rtol=1e-9, atol=1e-12):
                raise SystemExit(f"the NumPy reference of {name} disagrees with optimisers")


def ratio_cell(t: float | None, ours: float) -> str:
    return "—" if t is None else f"{fmt_time(t)} ({t / ours:.1f}×)"


def results_table(rows: list[Row], bandwidth: float) -> str:
    other_cols: list[str] = []
    for r in rows:
        for k, v in r.others.items():
            if k not in other_cols and v is not None:
                other_cols.append(k)
    head = ["workload", "dtype", "rule", "time", "GB/s", "% BW", "× roof", *other_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.workload,
            r.dtype,
            r.rule,
            fmt_time(r.ours),
            f"{r.gbps():.1f}",
            f"{100 * r.bytes / r.ours / bandwidth:.0f} %",
            f"{r.roof_ratio():.2f}",
            *(ratio_cell(r.others.get(k), r.ours) for k in other_cols),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(rows: list[Row], threads: int) -> str:
    lines = [
        f"| rule | dtype | 1 thread | {threads} threads | speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.scaling is not None:
            many, one = r.scaling
            lines.append(
                f"| {r.rule} | {r.dtype} | {fmt_time(one)} | {fmt_time(many)} | {one / many:.2f}× |"
            )
    return "\n".join(lines)


def roofline_table(rows: list[Row], bandwidth: float) -> str:
    lines = [
        "| workload | dtype | elements | roofline (Adam's bytes) | its GB/s | % BW |",
        "|---|---|---|---|---|---|",
    ]
    # One line per workload and dtype: the roofline timed in turn with Adam's
    # row where there is one (the figure Adam's "× roof" compares with), else
    # with the first row.
    chosen: dict[tuple[str, str], Row] = {}
    for r in rows:
        key = (r.workload, r.dtype)
        if key not in chosen or r.rule == "Adam":
            chosen[key] = r
    for r in chosen.values():
        adam_bytes = r.elements * np.dtype(r.dtype).itemsize * traffic("Adam")
        lines.append(
            f"| {r.workload} | {r.dtype} | {r.elements:,} | {fmt_time(r.roofline)} | "
            f"{adam_bytes / r.roofline / 1e9:.1f} | {100 * adam_bytes / r.roofline / bandwidth:.0f} % |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], bandwidth: float, threads: int) -> list[tuple[str, str, bool]]:
    """The issue's targets: (target, what was measured, met)."""
    by = {(r.workload, r.dtype, r.rule): r for r in rows}
    out: list[tuple[str, str, bool]] = []
    flat_adam = by.get(("flat", "float32", "Adam"))
    if flat_adam:
        ours, roof = flat_adam.ours, flat_adam.roofline
        ratio = ours / roof
        out.append(
            (
                "flat Adam f32 ≤ 1.05× roofline (timed in alternation)",
                f"{ratio:.2f}× ({fmt_time(ours)} vs {fmt_time(roof)})",
                ratio <= 1.05,
            )
        )
    for workload, limit in (("flat", 1.0), ("resnet50", 0.9)):
        row = by.get((workload, "float32", "Adam"))
        if row and row.paired_torch:
            ours, fused = row.paired_torch
            out.append(
                (
                    f"{workload} Adam f32 ≤ {limit}× torch fused (timed in alternation)",
                    f"{ours / fused:.2f}× ({fmt_time(ours)} vs {fmt_time(fused)})",
                    ours <= limit * fused,
                )
            )
    for workload, limit in (("many", 0.5e-3), ("mlp", 10e-6)):
        for dt in ("float32", "float64"):
            sel = [r for r in rows if r.workload == workload and r.dtype == dt]
            if not sel:
                continue
            over = [r for r in sel if r.ours > limit]
            adam = by.get((workload, dt, "Adam"))
            what = f"Adam {fmt_time(adam.ours)}; " if adam else ""
            what += f"{len(sel) - len(over)}/{len(sel)} rows within"
            if over:
                worst = max(over, key=lambda r: r.ours)
                what += f"; slowest {worst.rule} {fmt_time(worst.ours)}"
                # A row whose bytes take longer than the limit at the roofline
                # kernel's speed cannot meet it on this machine.
                floored = [r for r in over if r.floor() > limit]
                if floored:
                    what += f"; {len(floored)} of those over the limit even at the roofline kernel's speed"
            out.append((f"{workload} {dt} ≤ {fmt_time(limit)}", what, not over))
    for dt in ("float32", "float64"):
        sel = [r for r in rows if r.workload == "flat" and r.dtype == dt]
        if sel:
            low = [r for r in sel if r.bytes / r.ours / bandwidth < 0.8]
            what = f"{len(sel) - len(low)}/{len(sel)} rules ≥ 80 %"
            if low:
                what += "; below: " + ", ".join(
                    f"{r.rule} {100 * r.bytes / r.ours / bandwidth:.0f} %" for r in low
                )
            out.append((f"flat {dt}: every rule ≥ 80 % of bandwidth", what, not low))
    for chain, limit in ((CHAIN_ELEMENTWISE, 1.1), (CHAIN_NORM, 1.5)):
        for r in rows:
            if r.rule != chain or r.paired_adam is None:
                continue
            chain_time, adam_time = r.paired_adam
            ratio = chain_time / adam_time
            out.append(
                (
                    f"{chain} ≤ {limit}× Adam, {r.workload} {r.dtype} (timed in alternation)",
                    f"{ratio:.2f}× ({fmt_time(chain_time)} vs {fmt_time(adam_time)})",
                    ratio <= limit,
                )
            )
    speedups = [(r, r.scaling[1] / r.scaling[0]) for r in rows if r.scaling is not None]
    for r, s in speedups:
        if r.rule == "Adam":
            out.append(
                (f"cache {r.dtype} Adam: {threads} threads ≥ 1.7× 1 thread", f"{s:.2f}×", s >= 1.7)
            )
    if speedups:
        slow = [(r, s) for r, s in speedups if s < 1.7]
        what = f"{len(speedups) - len(slow)}/{len(speedups)} rows ≥ 1.7×"
        if slow:
            worst, s = min(slow, key=lambda rs: rs[1])
            what += f"; lowest {worst.rule} {worst.dtype} {s:.2f}×"
        out.append((f"cache, every rule: {threads} threads ≥ 1.7× 1 thread", what, not slow))
    return out


def targets_table(checks: list[tuple[str, str, bool]]) -> str:
    lines = ["| target | measured | |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'met' if ok else '**missed**'} |" for t, m, ok in checks]
    return "\n".join(lines)


def plot(rows: list[Row], bandwidth: float, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: no plot written (pip install matplotlib)", file=sys.stderr
        )
        return
    workloads = list(dict.fromkeys(r.workload for r in rows))
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    main = "flat" if "flat" in workloads else workloads[0]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(14, 10))

    # (1) % of bandwidth per rule on one workload.
    rules = list(dict.fromkeys(r.rule for r in rows if r.workload == main))
    series: list[tuple[str, list[float]]] = []
    for dt in dtypes:
        sel = {r.rule: r for r in rows if r.workload == main and r.dtype == dt}
        series.append(
            (
                f"optimisers {dt}",
                [100 * sel[n].bytes / sel[n].ours / bandwidth if n in sel else 0 for n in rules],
            )
        )
    sel = {r.rule: r for r in rows if r.workload == main and r.dtype == dtypes[0]}
    for other in ("NumPy", "optax", "torch fused"):
        vals = [
            100 * sel[n].bytes / t / bandwidth
            if n in sel and (t := sel[n].others.get(other))
            else 0
            for n in rules
        ]
        if any(vals):
            series.append((f"{other} {dtypes[0]}", vals))
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series):
        ax1.bar([j + i * width for j in range(len(rules))], vals, width, label=label)
    ax1.axhline(100, color="k", lw=0.8)
    ax1.axhline(80, color="k", lw=0.8, ls="--")
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(rules))])
    ax1.set_xticklabels([n.replace("+", "+\n") for n in rules], rotation=60, ha="right", fontsize=8)
    ax1.set_ylabel("% of copy bandwidth")
    ax1.set_title(
        f"One step on {main} ({WORKLOAD_NOTES.get(main, main)}): bytes moved / time "
        f"vs {bandwidth / 1e9:.1f} GB/s copy"
    )
    ax1.legend(fontsize=8)

    # (2) Adam (or the first rule) across workloads, time relative to the roofline.
    rule = "Adam" if any(r.rule == "Adam" for r in rows) else rows[0].rule
    dt = dtypes[0]
    sel2 = {r.workload: r for r in rows if r.rule == rule and r.dtype == dt}
    names = [w for w in workloads if w in sel2]
    cols: list[tuple[str, list[float | None]]] = [
        ("roofline kernel", [sel2[w].roofline for w in names]),
        ("optimisers", [sel2[w].ours for w in names]),
    ]
    for other in ("NumPy", "optax", "torch foreach", "torch fused"):
        times = [sel2[w].others.get(other) for w in names]
        if any(t is not None for t in times):
            cols.append((other, times))
    width = 0.8 / len(cols)
    for i, (label, times) in enumerate(cols):
        xs = [j + i * width for j, t in enumerate(times) if t is not None]
        ax2.bar(xs, [t * 1e3 for t in times if t is not None], width, label=label)
    ax2.set_yscale("log")
    ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax2.set_xticklabels([f"{w}\n{WORKLOAD_NOTES.get(w, '')}" for w in names], fontsize=8)
    ax2.set_ylabel("ms per step (log)")
    ax2.set_title(f"{rule} {dt}: one step")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


def machine() -> dict[str, str]:
    info = {"platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", "?")
        flags = fields.get("Flags", "").split()
        info["SIMD flags"] = " ".join(
            f for f in flags if f in ("avx2", "fma") or f.startswith("avx512")
        )
        for key in (
            "CPU family",
            "Model",
            "L1d cache",
            "L2 cache",
            "L3 cache",
            "Hypervisor vendor",
        ):
            if key in fields:
                info[key] = fields[key]
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor() or "?"
    info["nproc"] = str(os.cpu_count())
    try:
        with open("/proc/meminfo") as f:
            mem = next(line for line in f if line.startswith("MemTotal"))
        info["memory"] = f"{int(mem.split()[1]) / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    info["kernel ISA in use"] = _core.get_isa()
    return info


def versions() -> dict[str, str]:
    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "optimisers": o.__version__,
    }
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out["optimisers"] += f" (git {rev}{' + uncommitted changes' if dirty else ''})"
    except (OSError, subprocess.CalledProcessError):
        pass
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out["rustc"] = subprocess.run(
            ["rustc", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    for mod in ("jax", "jaxlib", "optax", "torch", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = "not installed"
    return out


# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--rules",
        default="all",
        help="comma-separated rule names (see --list), 'all', or 'chains' for the two chains",
    )
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated: float32,float64")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, of: {', '.join(WORKLOADS)}",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="steps timed per measurement (default: per workload, fewer for the big ones)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads for optimisers, the reference kernels and torch (default: all cores)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=BUDGET,
        help=f"at most this many seconds of timed steps per measurement (default {BUDGET})",
    )
    p.add_argument("--out", default="bench_step.png", help="where to write the plot (PNG)")
    p.add_argument("--md", default=None, help="also write a Markdown report here")
    p.add_argument(
        "--others",
        choices=("headline", "all", "none"),
        default="headline",
        help="what else to time: NumPy always (unless 'none'); optax and torch for every rule "
        "on flat, cache and mlp but only Adam and the chains on resnet50 and many "
        "('headline', to keep jit compiles short), for every row ('all'), or nothing ('none')",
    )
    p.add_argument(
        "--no-check", action="store_true", help="skip checking the NumPy reference first"
    )
    p.add_argument("--list", action="store_true", help="list rules and workloads, then exit")
    args = p.parse_args(argv)
    if args.list:
        for n in RULES:
            print(f"rule      {n:34s} {traffic(n)} arrays moved per element")
        for w, shapes in WORKLOADS.items():
            print(
                f"workload  {w:10s} {len(shapes):5d} arrays, {sum(math.prod(s) for _, s in shapes):>11,} "
                f"elements: {WORKLOAD_NOTES[w]}"
            )
        raise SystemExit(0)
    groups = {"all": list(RULES), "chains": [CHAIN_ELEMENTWISE, CHAIN_NORM]}
    args.rules = [
        r for name in args.rules.split(",") for r in groups.get(name.strip(), [name.strip()])
    ]
    args.dtypes = [np.dtype(d.strip()) for d in args.dtypes.split(",")]
    args.workloads = [w.strip() for w in args.workloads.split(",")]
    for r in args.rules:
        if r not in RULES:
            p.error(f"unknown rule {r!r}; known: {', '.join(RULES)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    for d in args.dtypes:
        if d not in (np.float32, np.float64):
            p.error(f"dtype {d} is not float32 or float64")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()
    others = {
        "optax": args.others != "none" and _have("jax") and _have("optax"),
        "torch": args.others != "none" and _have("torch"),
    }
    start_worker(args.budget, args.threads, others)
    missing = [m for m in ("optax", "torch") if not others.get(m) and args.others != "none"]
    if missing:
        print(f"not installed, so not compared: {', '.join(missing)}", file=sys.stderr)
    if not args.no_check:
        check_numpy_reference(args.rules)

    print(f"copy bandwidth at {args.threads} threads ...", file=sys.stderr, flush=True)
    # Measured at the start, before each workload and dtype, and at the end; the
    # reference is the median (this machine's bandwidth moves by ±20 % over minutes).
    samples = [copy_bandwidth(args.threads)]
    bandwidth = samples[0]
    plain = copy_bandwidth(args.threads, stream=False)
    single = copy_bandwidth(1)
    print(
        f"  {bandwidth / 1e9:.1f} GB/s (non-temporal stores; plain stores {plain / 1e9:.1f} GB/s; "
        f"1 thread {single / 1e9:.1f} GB/s)",
        file=sys.stderr,
    )

    rows: list[Row] = []
    for workload in args.workloads:
        for dtype in args.dtypes:
            if workload != args.workloads[0] or dtype != args.dtypes[0]:
                samples.append(copy_bandwidth(args.threads))
            rows += in_fresh_process(workload, dtype, args, others)
    samples.append(copy_bandwidth(args.threads))
    bandwidth = statistics.median(samples)

    checks = targets(rows, bandwidth, args.threads)
    body = [
        f"Memory bandwidth (copy kernel, {args.threads} threads, non-temporal stores, read + write counted): "
        f"**{bandwidth / 1e9:.1f} GB/s**, the median of {len(samples)} measurements through the run "
        f"(from {min(samples) / 1e9:.1f} to {max(samples) / 1e9:.1f} GB/s; plain stores: "
        f"{plain / 1e9:.1f} GB/s; 1 thread: {single / 1e9:.1f} GB/s).",
        "",
        "## Steps",
        "",
        results_table(rows, bandwidth),
        "",
        "## Roofline kernel (Adam's bytes, trivial arithmetic, one buffer)",
        "",
        roofline_table(rows, bandwidth),
    ]
    if any(r.scaling is not None for r in rows):
        body += ["", "## Thread scaling in cache", "", scaling_table(rows, args.threads)]
    body += ["", "## Targets", "", targets_table(checks)]
    text = "\n".join(body)
    print(text)
    elapsed = time.time() - started
    print(f"\n({elapsed / 60:.1f} minutes)", file=sys.stderr)

    if args.md:
        info, vers = machine(), versions()
        report = [
            f"# One `update_` step: {datetime.date.today().isoformat()}",
            "",
            "## Machine",
            "",
            *(f"- {k}: {v}" for k, v in info.items()),
            f"- threads: {args.threads}",
            "- load average (1, 5, 15 min) before the run: "
            + ", ".join(f"{v:.2f}" for v in load_before)
            + "; after: "
            + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
            "",
            "## Command",
            "",
            "```",
            "python benches/bench_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "```",
            "",
            f"Ran for {elapsed / 60:.1f} minutes. Times are medians over many steps after a warm-up; "
            "the others' ratios are their time over ours, measured in the same run.",
            "",
            "## Versions",
            "",
            *(f"- {k}: {v}" for k, v in vers.items()),
            "",
            text,
            "",
        ]
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text("\n".join(report))
        print(f"report written to {args.md}", file=sys.stderr)
    plot(rows, bandwidth, args.out)


if __name__ == "__main__":
    main()

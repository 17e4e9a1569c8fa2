"""Time ``optimisers.torch.Optimizer(Adam)`` against ``torch.optim.Adam(fused=True)``
on the same tensors, and the adapter's overhead over ``update_`` on the same arrays.

    python benches/bench_torch.py                          # every workload, float32
    python benches/bench_torch.py --workloads mlp,many     # a narrow selection

Workloads (``bench_step.py``'s shapes): ``flat``, one vector of 2^25 elements;
``resnet50``, torchvision's ResNet-50 parameter shapes (161 arrays); ``many``,
1,000 arrays of 1,000 elements; ``mlp``, a 3-layer MLP (6 arrays). Each pair
is timed in alternation (median of rounds of batches; see
``bench_step.alternated``): the two optimisers step the same parameter tensors,
each with its own state, from gradients set once. The overhead columns time
``Optimizer.step`` against ``update_`` on the views it steps, with the
gradients' views built beforehand: the difference is what the adapter adds
(torch's step hooks, the checks of lr, of the parameters' memory and of the
gradient tensors), first with the same gradient tensors every step (their
views reused), then with new ones before every step, as after
``zero_grad()`` and ``backward()`` (new views made: one ``Tensor.numpy()``
a parameter).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_step import MLP, PAUSE, RESNET50, alternated, fmt_time

import optimisers as o
import optimisers.torch as ot

WORKLOADS = {
    "flat": [("w", (2**25,))],
    "resnet50": RESNET50,
    "many": [(str(i), (1000,)) for i in range(1000)],
    "mlp": MLP,
}
# (rounds, steps per batch): the big workloads get fewer steps.
REPEATS = {"flat": (10, 1), "resnet50": (10, 1), "many": (10, 10), "mlp": (10, 200)}


def tensors(shapes: list[tuple[str, tuple[int, ...]]]) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(shape, generator=g)) for _, shape in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return ps


def bench(workload: str, scale: float) -> tuple[float, float, float, float, float, int]:
    """(ours, torch fused, Optimizer.step, update_, Optimizer.step's overhead
    with new gradient tensors) seconds per step, and the number of parameters."""
    ps = tensors(WORKLOADS[workload])
    ours = ot.Optimizer(ps, o.Adam())
    fused = torch.optim.Adam(ps, lr=1e-3, fused=True)
    rounds, batch = REPEATS[workload]
    batch = max(1, round(batch * scale))
    t_ours, t_fused = alternated([ours.step, fused.step], rounds, pause=PAUSE, batch=batch)

    layout = ours._layout
    assert layout is not None
    grads = [[p.grad.numpy() for p in ps]]

    def bare() -> None:
        o.update_(layout.state, layout.model, grads)

    t_step, t_bare = alternated([ours.step, bare], rounds, pause=PAUSE, batch=batch)

    # New gradient tensors before every step, as backward makes after
    # zero_grad(): the step then makes new views of them (one step per batch).
    spare = [[p.grad.clone() for p in ps] for _ in range(2)]
    turn = [0]

    def new_grads() -> None:
        turn[0] ^= 1
        for p, g in zip(ps, spare[turn[0]]):
            p.grad = g

    def step_new() -> None:
        new_grads()
        ours.step()

    # Less the time of setting the new gradients alone.
    t_new, t_bare2, t_swap = alternated(
        [step_new, bare, new_grads], rounds, pause=PAUSE, batch=batch
    )
    return t_ours, t_fused, t_step, t_bare, t_new - t_swap - t_bare2, len(ps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--scale", type=float, default=1.0, help="steps per batch, scaled")
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{o.get_num_threads()} of ours; Adam, float32"
    )
    print()
    print(
        "| workload | params | ours | torch fused | ours / fused | step | update_ "
        "| overhead | overhead, new grads |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.workloads.split(","):
        t_ours, t_fused, t_step, t_bare, extra_new, n = bench(name, args.scale)
        extra = t_step - t_bare
        print(
            f"| {name} | {n} | {fmt_time(t_ours)} | {fmt_time(t_fused)} "
            f"| {t_ours / t_fused:.2f}x | {fmt_time(t_step)} | {fmt_time(t_bare)} "
            f"| {extra * 1e6:.1f} µs ({extra * 1e6 / n:.2f}/param) "
            f"| {extra_new * 1e6:.1f} µs ({extra_new * 1e6 / n:.2f}/param) |"
        )


if __name__ == "__main__":
    main()

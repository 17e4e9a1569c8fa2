"""Train a small torch MLP on scikit-learn's bundled digits (8 x 8 images) on
the CPU, with optimisers.torch.Optimizer (AdamW) and a torch LR scheduler.

    python examples/train_torch.py [--steps 600]
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits

import optimisers
import optimisers.torch


def digits(seed: int = 0):
    """The digits split 80/20 into training and test tensors, pixels scaled to [0, 1]."""
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x, y, x_test, y_test = digits()
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = optimisers.torch.Optimizer(model.parameters(), optimisers.AdamW(3e-3, lambda_=1e-4))
    # Halve the learning rate (the rule's eta) every third of the run.
    schedule = torch.optim.lr_scheduler.StepLR(opt, max(1, args.steps // 3), gamma=0.5)
    batches = torch.Generator().manual_seed(1)

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        pick = torch.randint(len(y), (args.batch,), generator=batches)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[pick]), y[pick])
        loss.backward()
        opt.step()
        schedule.step()
        if step == 1 or step % max(1, args.steps // 5) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {opt.param_groups[0]['lr']:.2e}")
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    print(f"{args.steps} steps in {elapsed:.2f} s, test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()

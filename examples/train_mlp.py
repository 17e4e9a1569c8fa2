"""Train a small NumPy MLP on a generated data set (three interleaved spirals)
with optimisers: the model is a plain dict of arrays, gradients come from a
hand-written backward pass, and `update_` applies Adam with weight decay.

    python examples/train_mlp.py [--steps 500] [--rule adamw]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import optimisers


def spirals(n_per_class: int, classes: int = 3, noise: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, n_per_class) + rng.normal(0, noise, n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def init_mlp(sizes: list[int], seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = rng.normal(0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(np.float32)
        layers.append({"w": w, "b": np.zeros(fan_out, np.float32)})
    return {"layers": layers, "activation": "relu"}


def loss_and_grad(model: dict, x: np.ndarray, y: np.ndarray):
    """Softmax cross-entropy of the MLP, and its gradient as a tree like the model."""
    layers = model["layers"]
    hs = [x]
    for layer in layers[:-1]:
        hs.append(np.maximum(hs[-1] @ layer["w"] + layer["b"], 0))
    logits = hs[-1] @ layers[-1]["w"] + layers[-1]["b"]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    delta = p
    delta[np.arange(n), y] -= 1
    delta /= n
    grads = []
    for i in reversed(range(len(layers))):
        grads.append({"w": hs[i].T @ delta, "b": delta.sum(axis=0)})
        if i:
            delta = (delta @ layers[i]["w"].T) * (hs[i] > 0)
    return float(loss), {"layers": grads[::-1], "activation": None}


def accuracy(model: dict, x: np.ndarray, y: np.ndarray) -> float:
    h = x
    for layer in model["layers"][:-1]:
        h = np.maximum(h @ layer["w"] + layer["b"], 0)
    return float(((h @ model["layers"][-1]["w"]).argmax(axis=1) == y).mean())


RULES = {
    "adam": lambda: optimisers.Adam(3e-3),
    "adamw": lambda: optimisers.AdamW(3e-3, lambda_=1e-4),
    "clipped": lambda: optimisers.OptimiserChain(optimisers.ClipNorm(1.0), optimisers.Adam(3e-3)),
    "momentum": lambda: optimisers.Momentum(0.05, 0.9),
}


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rule", choices=sorted(RULES), default="adamw")
    parser.add_argument("--points", type=int, default=300, help="points per spiral")
    args = parser.parse_args(argv)

    x, y = spirals(args.points)
    model = init_mlp([2, 64, 64, 3])
    state = optimisers.setup(RULES[args.rule](), model)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss, grad = loss_and_grad(model, x, y)
        state, model = optimisers.update_(state, model, grad)
        if step == 1 or step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {loss:.4f}  accuracy {accuracy(model, x, y):.3f}")
    elapsed = time.perf_counter() - start
    final = accuracy(model, x, y)
    print(f"{args.rule}: {args.steps} steps in {elapsed:.2f} s, final accuracy {final:.3f}")
    return final


if __name__ == "__main__":
    main()

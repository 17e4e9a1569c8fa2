"""Fit a small JAX MLP to a noisy sine on the CPU: gradients from jax.grad,
steps from optimisers.update, which takes the JAX arrays as they are (model
and gradients) and returns NumPy arrays in the model's place.

    python examples/train_jax.py [--steps 500]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import optimisers


def init_mlp(sizes: list[int], seed: int = 0) -> list[dict]:
    keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def predict(layers: list[dict], x: jax.Array) -> jax.Array:
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def loss(layers: list[dict], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((predict(layers, x) - y) ** 2)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (256, 1)).astype(np.float32)
    y = np.sin(x) + rng.normal(0, 0.05, x.shape).astype(np.float32)
    model = init_mlp([1, 32, 32, 1])
    state = optimisers.setup(optimisers.Adam(1e-2), model)
    value_and_grad = jax.jit(jax.value_and_grad(loss))

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        value, grad = value_and_grad(model, x, y)
        state, model = optimisers.update(state, model, grad)
        if step == 1 or step % max(1, args.steps // 5) == 0:
            print(f"step {step:5d}  loss {float(value):.4f}")
    elapsed = time.perf_counter() - start
    final = float(loss(model, x, y))
    print(f"{args.steps} steps in {elapsed:.2f} s, final loss {final:.4f}")
    return final


if __name__ == "__main__":
    main()

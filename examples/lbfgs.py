"""Fit a small NumPy network with SciPy's L-BFGS-B, through ``destructure``.

SciPy's optimisers want one flat float64 vector and a function returning the
loss and its gradient as another flat vector. ``destructure`` gives the first
and the way back (``re``); the model's gradient is computed as a tree like the
model, by a hand-written backward pass, and ``re.flatten`` turns it into the
flat gradient (summing the gradients of tied parameters: here the decoder of
the auto-encoding branch is the encoder's weight, transposed, a NumPy view).

    python examples/lbfgs.py [--small] [--hidden 32] [--maxiter 500]

The model is float64 so that ``re(x, copy=False)`` hands the network views into
SciPy's own vector: no copy in either direction but ``re.flatten``'s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize

import optimisers


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs in [-1, 1]^2 and a smooth target to regress."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2))
    y = np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1]) + 0.5 * x[:, 0] ** 2
    return x, y


def init(hidden: int, seed: int = 1) -> dict:
    """One tanh hidden layer predicting y, and a tied decoder reconstructing x
    from the hidden layer with the encoder's weight transposed."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1.0, (hidden, 2))
    return {
        "enc": {"weight": w, "bias": np.zeros(hidden)},
        "head": {"weight": rng.normal(0, 1 / np.sqrt(hidden), (1, hidden)), "bias": np.zeros(1)},
        "dec": {"weight": w.T, "bias": np.zeros(2)},  # a view: tied to enc.weight
        "activation": "tanh",
        "reconstruction": 0.1,  # weight of the auto-encoding loss
    }


def loss_and_grad(model: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Mean squared error of the prediction plus a small reconstruction error,
    and the gradient as a tree like the model (None where nothing is trained)."""
    n = x.shape[0]
    enc, head, dec, lam = model["enc"], model["head"], model["dec"], model["reconstruction"]
    h = np.tanh(x @ enc["weight"].T + enc["bias"])
    pred = h @ head["weight"].T + head["bias"]
    rec = h @ dec["weight"].T + dec["bias"]
    err, rerr = pred[:, 0] - y, rec - x
    loss = float(np.mean(err**2) + lam * np.mean(np.sum(rerr**2, axis=1)))

    dpred = (2 / n) * err[:, None]
    drec = (2 * lam / n) * rerr
    dh = (dpred @ head["weight"] + drec @ dec["weight"]) * (1 - h**2)
    grad = {
        "enc": {"weight": dh.T @ x, "bias": dh.sum(0)},
        "head": {"weight": dpred.T @ h, "bias": dpred.sum(0)},
        "dec": {"weight": drec.T @ h, "bias": drec.sum(0)},
    }
    return loss, grad


def fit(n: int = 400, hidden: int = 32, maxiter: int = 500, seed: int = 0) -> dict:
    x, y = data(n, seed)
    model = init(hidden, seed + 1)
    flat, re = optimisers.destructure(model)  # the tie counted once

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = loss_and_grad(re(v, copy=False), x, y)
        return loss, re.flatten(grad)

    first = fun(flat)[0]
    t0 = time.perf_counter()
    result = minimize(fun, flat, jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
    seconds = time.perf_counter() - t0
    trained = re(result.x)
    return {
        "parameters": len(re),
        "initial_loss": first,
        "final_loss": loss_and_grad(trained, x, y)[0],
        "iterations": result.nit,
        "seconds": seconds,
        "model": trained,
        "fun": fun,
        "flat": flat,
        "message": result.message,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a quick run: small data, few iterations")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--maxiter", type=int, default=500)
    args = ap.parse_args()
    n, maxiter = (100, 60) if args.small else (400, args.maxiter)
    out = fit(n=n, hidden=args.hidden, maxiter=maxiter)
    m = out["model"]
    print(f"{out['parameters']} parameters (the tied decoder weight counted once)")
    print(
        f"loss {out['initial_loss']:.4f} -> {out['final_loss']:.5f} in {out['iterations']} "
        f"L-BFGS-B iterations, {out['seconds']:.2f} s ({out['message']})"
    )
    print(
        "decoder still the encoder's weight, transposed:",
        np.shares_memory(m["dec"]["weight"], m["enc"]["weight"]),
    )


if __name__ == "__main__":
    main()

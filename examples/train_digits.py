"""Train an MLP on scikit-learn's handwritten digits (bundled, no download) the way
training runs are run: a warm-up and cosine-decay schedule, gradients clipped by
the global norm, AdamW without weight decay on the biases, an exponential
moving average of the weights for evaluation, a checkpoint halfway from which
the run is resumed, and a figure of it all.

    pip install ".[examples]" && python examples/train_digits.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import matplotlib

matplotlib.use("Agg")  # files only, no window

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import optimisers
from optimisers import schedules


def data(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 0.1
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def init_mlp(sizes: list[int], seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = rng.normal(0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(np.float32)
        layers.append({"w": w, "b": np.zeros(fan_out, np.float32)})
    return {"layers": layers}


def loss_and_grad(model: dict, x: np.ndarray, y: np.ndarray):
    """Softmax cross-entropy of the MLP, and its gradient as a tree like the model."""
    layers = model["layers"]
    hs = [x]
    for layer in layers[:-1]:
        hs.append(np.maximum(hs[-1] @ layer["w"] + layer["b"], 0))
    logits = hs[-1] @ layers[-1]["w"] + layers[-1]["b"]
    logits -= logits.max(axis=1, keepdims=True)
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
    return float(loss), {"layers": grads[::-1]}


def accuracy(model: dict, x: np.ndarray, y: np.ndarray) -> float:
    h = x
    for layer in model["layers"][:-1]:
        h = np.maximum(h @ layer["w"] + layer["b"], 0)
    logits = h @ model["layers"][-1]["w"] + model["layers"][-1]["b"]
    return float((logits.argmax(axis=1) == y).mean())


def copy_model(model: dict) -> dict:
    return {"layers": [{k: v.copy() for k, v in layer.items()} for layer in model["layers"]]}


def make_state(model: dict, lr: schedules.Schedule):
    """AdamW on every weight matrix, and AdamW without decay on the biases (picked
    by key path), both after one ClipGlobalNorm over all the gradients, with the
    learning rate following ``lr``."""

    def rule(path, x):
        decay = 1e-2 if path[-1] == "w" else 0.0
        chain = optimisers.OptimiserChain(
            optimisers.ClipGlobalNorm(1.0), optimisers.AdamW(lambda_=decay)
        )
        return optimisers.Scheduled(chain, eta=lr)

    return optimisers.setup(rule, model, path=True)


def train(steps_range, model, average, state, x, y, x_test, y_test, lr, log, batch=64):
    """Steps ``steps_range`` of the run; each step's batch depends on the step only,
    so a resumed run sees the same batches as one that never stopped."""
    bar = tqdm(  # shown when the output is a terminal
        steps_range, desc="training", unit="step", disable=None, mininterval=0.25
    )
    for step in bar:
        idx = np.random.default_rng(step).choice(len(y), batch, replace=False)
        loss, grad = loss_and_grad(model, x[idx], y[idx])
        state, model = optimisers.update_(state, model, grad)
        optimisers.ema_(average, model, decay=0.99)
        log["step"].append(step)
        log["loss"].append(loss)
        log["lr"].append(lr(step))
        if step % 25 == 0 or step == steps_range[-1]:
            log["eval_step"].append(step)
            log["acc"].append(accuracy(model, x_test, y_test))
            log["acc_ema"].append(accuracy(average, x_test, y_test))
            bar.set_postfix(loss=f"{loss:.3f}", test=f"{log['acc_ema'][-1]:.3f}")
    return model, average, state


def plot(log: dict, path: str) -> None:
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    loss = np.array(log["loss"])
    window = max(1, min(20, len(loss) // 5))
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    ax_loss.plot(log["step"], loss, color="0.8", lw=0.8, label="batch")
    ax_loss.plot(log["step"][window - 1 :], smooth, color="C0", label=f"mean of {window}")
    ax_loss.set(title="training loss", xlabel="step", yscale="log")
    ax_loss.legend()
    ax_acc.plot(log["eval_step"], log["acc"], label="live weights")
    ax_acc.plot(log["eval_step"], log["acc_ema"], label="EMA of weights")
    ax_acc.axvline(log["resumed_at"], color="0.5", ls=":", label="resumed from checkpoint")
    ax_acc.set(title="test accuracy", xlabel="step", ylim=(0.8, 1.0))
    ax_acc.legend(loc="lower right")
    ax_lr.plot(log["step"], log["lr"], color="C2")
    ax_lr.set(title="learning rate (warmup_cosine_decay)", xlabel="step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--plot", default="train_digits.png", help="where to write the figure")
    parser.add_argument("--checkpoint", default=None, help="where to save the checkpoint")
    args = parser.parse_args(argv)

    x, y, x_test, y_test = data()
    warmup = max(1, args.steps // 10)
    lr = schedules.warmup_cosine_decay(
        0.0, 3e-3, warmup_steps=warmup, decay_steps=max(args.steps, warmup + 1)
    )
    log: dict = {k: [] for k in ("step", "loss", "lr", "eval_step", "acc", "acc_ema")}
    start = time.perf_counter()

    # The first half of the run, then a checkpoint: the optimiser's state, and
    # the model and its average (plain arrays, saved alongside).
    model = init_mlp([64, 128, 10])
    average = copy_model(model)
    state = make_state(model, lr)
    half = args.steps // 2
    model, average, state = train(range(half), model, average, state, x, y, x_test, y_test, lr, log)
    folder = args.checkpoint or tempfile.mkdtemp(prefix="train_digits_")
    os.makedirs(folder, exist_ok=True)
    optimisers.save(os.path.join(folder, "state.npz"), state)
    weights = {
        f"{kind}.{i}.{k}": v
        for kind, tree in (("model", model), ("average", average))
        for i, layer in enumerate(tree["layers"])
        for k, v in layer.items()
    }
    np.savez(os.path.join(folder, "weights.npz"), **weights)
    del model, average, state

    # Resumed as a new process would: a fresh model and state, filled from the files.
    with np.load(os.path.join(folder, "weights.npz"), allow_pickle=False) as saved:
        model, average = init_mlp([64, 128, 10]), init_mlp([64, 128, 10])
        for kind, tree in (("model", model), ("average", average)):
            for i, layer in enumerate(tree["layers"]):
                for k in layer:
                    layer[k][...] = saved[f"{kind}.{i}.{k}"]
    state = make_state(model, lr)
    optimisers.load(os.path.join(folder, "state.npz"), state)
    log["resumed_at"] = half
    model, average, state = train(
        range(half, args.steps), model, average, state, x, y, x_test, y_test, lr, log
    )

    elapsed = time.perf_counter() - start
    result = {
        "accuracy": accuracy(model, x_test, y_test),
        "accuracy_ema": accuracy(average, x_test, y_test),
        "seconds": elapsed,
    }
    plot(log, args.plot)
    print(
        f"{args.steps} steps in {elapsed:.1f} s (checkpoint at step {half} in {folder}); "
        f"test accuracy {result['accuracy']:.3f} live, {result['accuracy_ema']:.3f} averaged; "
        f"figure in {args.plot}"
    )
    return result


if __name__ == "__main__":
    main()

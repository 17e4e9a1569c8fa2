"""The real-data example, examples/train_digits.py, run on fewer steps."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

import optimisers

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "train_digits.py")


def _example():
    spec = importlib.util.spec_from_file_location("train_digits", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_digits_example_learns_resumes_and_draws(tmp_path):
    example = _example()
    plot = tmp_path / "run.png"
    result = example.main(
        ["--steps", "400", "--plot", str(plot), "--checkpoint", str(tmp_path / "ckpt")]
    )
    assert result["accuracy"] >= 0.93 and result["accuracy_ema"] >= 0.93
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the checkpoint holds the optimiser state of every parameter, loadable anew
    model = example.init_mlp([64, 128, 10])
    lr = optimisers.schedules.warmup_cosine_decay(0.0, 3e-3, 40, 400)
    state = example.make_state(model, lr)
    assert optimisers.load(tmp_path / "ckpt" / "state.npz", state) == ([], [])
    assert state["layers"][0]["w"].state[0] == 200  # the schedule's step, at the halfway save
    assert state["layers"][0]["b"].rule.rule.rules[1].lambda_ == 0.0  # no decay on biases
    assert not np.array_equal(state["layers"][1]["w"].state[1][1][0], 0)

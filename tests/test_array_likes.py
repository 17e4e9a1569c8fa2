"""Models whose leaves are other libraries' arrays (JAX, torch), and jax.grad
gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optimisers as o


def _loss(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] - y) ** 2)


def _jax_model(seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {
        "w1": jax.random.normal(k1, (3, 8)),
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(k2, (8, 1)),
    }


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    return x, np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("rule", [o.Adam(0.01), o.OptimiserChain(o.ClipNorm(1.0), o.Momentum())])
def test_jax_grad_trees_are_the_same_bits_as_numpy(rule):
    x, y = _data()
    model = {k: np.asarray(v) for k, v in _jax_model().items()}
    s_jax, s_np = o.setup(rule, model), o.setup(rule, model)
    m_jax, m_np = model, model
    grad = jax.jit(jax.grad(_loss))
    for _ in range(10):
        g = grad(m_jax, x, y)
        assert isinstance(g["w1"], jax.Array)
        g_np = {k: np.array(v) for k, v in g.items()}
        s_jax, m_jax = o.update(s_jax, m_jax, g)
        s_np, m_np = o.update(s_np, m_np, g_np)
        for k in model:
            assert np.array_equal(m_jax[k], m_np[k])
        m_np = m_jax  # the same inputs every step


def test_a_jax_model_trains_with_update():
    x, y = _data()
    params = {k: v for k, v in _jax_model().items() if k in ("w1", "b1", "w2")}
    model = {"params": params, "name": "mlp", "steps": jnp.arange(2)}  # the others: not trained
    assert [np.shape(p) for p in o.trainables(model)] == [(3, 8), (8,), (8, 1)]
    state = o.setup(o.Adam(0.05), model)
    assert state["name"] is None and state["steps"] is None
    grad = jax.jit(jax.grad(_loss))
    first = float(_loss(params, x, y))
    for _ in range(200):
        state, model = o.update(state, model, {"params": grad(model["params"], x, y)})
    assert isinstance(model["params"]["w1"], np.ndarray)
    assert model["params"]["w1"].dtype == np.float32
    assert isinstance(model["steps"], jax.Array)  # kept as it was
    assert float(_loss(model["params"], x, y)) < 0.1 * first


def test_a_jax_model_in_float64():
    with jax.enable_x64(True):
        model = {"w": jnp.ones(4, dtype=jnp.float64)}
        state = o.setup(o.Descent(0.5), model)
        _, new = o.update(state, model, {"w": jnp.full(4, 0.25, dtype=jnp.float64)})
    assert new["w"].dtype == np.float64
    assert np.array_equal(new["w"], np.full(4, 0.875))


def test_update_in_place_refuses_an_immutable_jax_array_naming_it():
    model = {"a": np.ones(3, np.float32), "b": [jnp.ones(3)]}
    state = o.setup(o.Adam(0.1), model)
    saved = [leaf.state[0].copy() for leaf in (state["a"], state["b"][0])]
    with pytest.raises(TypeError, match=r"KeyPath\('b', 0\).*immutable.*use update"):
        o.update_(state, model, {"a": np.ones(3, np.float32), "b": [jnp.ones(3)]})
    assert np.array_equal(model["a"], np.ones(3, np.float32))  # nothing changed
    assert np.array_equal(state["a"].state[0], saved[0])


def test_torch_tensors_as_model_leaves():
    w = torch.ones(2, 3, requires_grad=True)
    model = {"w": w, "frozen": torch.ones(2, dtype=torch.int64)}
    state = o.setup(o.Descent(0.5), model)
    assert state["frozen"] is None
    out_state, out = o.update_(state, model, {"w": torch.ones(2, 3)})
    assert out_state is state
    assert out is model and out["w"] is w  # written in place
    assert torch.equal(w.detach(), torch.full((2, 3), 0.5))
    _, new = o.update(state, model, {"w": np.ones((2, 3), np.float32)})
    assert isinstance(new["w"], np.ndarray) and np.array_equal(new["w"], np.zeros((2, 3)))
    assert torch.equal(w.detach(), torch.full((2, 3), 0.5))  # update leaves the input


def test_a_tensor_met_twice_is_one_parameter():
    w = torch.zeros(3)
    model = [w, w]
    state = o.setup(o.Descent(1.0), model)
    assert state[0] is state[1]
    o.update_(state, model, [torch.ones(3), torch.ones(3)])
    assert torch.equal(w, torch.full((3,), -2.0))  # the two gradients summed


def test_an_array_like_numpy_cannot_read_is_refused_naming_it():
    with pytest.raises(TypeError, match=r"KeyPath\('h'\).*bfloat16"):
        o.setup(o.Adam(), {"h": torch.ones(2, dtype=torch.bfloat16)})


def test_numpy_scalars_are_not_parameters():
    state = o.setup(o.Adam(), {"w": np.ones(2), "s": np.float64(1.0)})
    assert state["s"] is None


def test_destructure_a_jax_model():
    model = {"w": jnp.arange(4.0), "b": jnp.ones(2)}
    flat, re = o.destructure(model)
    assert np.array_equal(flat, [0, 1, 2, 3, 1, 1])
    back = re(flat * 2)
    assert isinstance(back["w"], np.ndarray)
    assert np.array_equal(back["w"], [0, 2, 4, 6])

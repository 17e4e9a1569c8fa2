"""Where `setup` puts the state arrays.

Large state arrays start 1, 2 or 3 KiB into a page, in turn, so that a
leaf's state arrays do not share an offset in their pages with each other or
with a parameter NumPy allocated (see `_alloc._state_array`). Small ones are
packed into blocks shared by the whole `setup`, one set of blocks per state
slot (see `_alloc._Packed`). The values, shapes, dtypes and flags are those of
plain arrays.
"""

import pickle

import numpy as np
import pytest

import optimisers as O

PAGE = 4096


def page_offset(a: np.ndarray) -> int:
    return a.ctypes.data % PAGE


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_states_start_at_different_page_offsets(dtype):
    x = np.ones((1024, 512), dtype)  # 2 or 4 MiB, allocated by NumPy
    m, v, v_max = O.setup(O.AMSGrad(), x).state
    offsets = [page_offset(a) for a in (m, v, v_max)]
    assert sorted(offsets) == [1024, 2048, 3072], offsets
    eps = dtype(O.AMSGrad().epsilon)
    for a in (m, v, v_max):
        assert a.shape == x.shape and a.dtype == x.dtype
        assert a.flags.c_contiguous and a.flags.aligned and a.flags.writeable
        np.testing.assert_array_equal(a, np.full(x.shape, eps, dtype))


def test_zeros_and_filled_states_hold_their_values():
    x = np.ones(1 << 16, np.float32)  # 256 KiB
    velocity, eta = O.setup(O.Rprop(eta=0.25), x).state
    assert page_offset(velocity) != page_offset(eta)
    assert {page_offset(velocity), page_offset(eta)} <= {1024, 2048, 3072}
    np.testing.assert_array_equal(velocity, np.zeros_like(x))
    np.testing.assert_array_equal(eta, np.full_like(x, 0.25))


def test_small_states_of_one_setup_are_packed():
    """The small state arrays of one ``setup`` share a few blocks, one per
    state slot, in the order of the leaves: each on a cache line of its own,
    with the values and flags of a plain array."""
    shapes = [(1000,), (3,), (7, 5), (1,), (250,), (1000,), ()]
    model = [np.ones(s, np.float32) for s in shapes] + [np.ones(s, np.float64) for s in shapes]
    state = O.setup(O.AMSGrad(), model)
    arrays = [a for leaf in state for a in leaf.state[:3]]
    eps = O.AMSGrad().epsilon
    for x, leaf in zip(model, state):
        for a in leaf.state[:3]:
            assert a.shape == x.shape and a.dtype == x.dtype
            assert a.flags.c_contiguous and a.flags.aligned and a.flags.writeable
            assert a.ctypes.data % 64 == 0
            np.testing.assert_array_equal(a, np.full(x.shape, eps, x.dtype))
    for i, a in enumerate(arrays):
        for b in arrays[i + 1 :]:
            assert not np.shares_memory(a, b)
    assert all(a.base is not None for a in arrays)
    for slot in range(3):
        in_slot = [leaf.state[slot] for leaf in state]
        assert len({id(a.base) for a in in_slot}) == 1
        assert all(a.base is not arrays[0].base for a in in_slot) == (slot > 0)
        starts = [a.ctypes.data for a in in_slot]
        assert starts == sorted(starts), "a slot's arrays follow the leaves' order"
    zeros = O.setup(O.Adam(), model[:3])
    assert all(not m.any() and not v.any() for m, v, _ in (leaf.state for leaf in zeros))


def test_states_made_outside_setup_are_plain_arrays():
    x = np.ones(1000, np.float32)
    m, v, _ = O.Adam().init(x)
    assert m.base is None and v.base is None
    np.testing.assert_array_equal(m, 0)
    with pytest.raises(TypeError):
        O.setup(O.Adam(), [x, np.ones(3, np.complex64)])  # packing ends with the failed setup
    assert O.Adam().init(x)[0].base is None


def test_packed_states_train_like_plain_ones():
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(n).astype(np.float32) for n in (1000, 3, 250, 1)]
    packed = O.setup(O.Adam(), xs)
    plain = O.setup(O.Adam(), xs)
    for leaf in plain:
        leaf.state = tuple(np.array(s) if isinstance(s, np.ndarray) else s for s in leaf.state)
    assert plain[0].state[0].base is None and packed[0].state[0].base is not None
    x1, x2 = [x.copy() for x in xs], [x.copy() for x in xs]
    for _ in range(3):
        g = [rng.standard_normal(x.shape).astype(np.float32) for x in xs]
        O.update_(packed, x1, g)
        O.update_(plain, x2, g)
    for a, b in zip(
        x1 + [s for leaf in packed for s in leaf.state[:2]],
        x2 + [s for leaf in plain for s in leaf.state[:2]],
    ):
        assert a.tobytes() == b.tobytes()
    again = pickle.loads(pickle.dumps(packed))
    for a, b in zip(again, packed):
        np.testing.assert_array_equal(a.state[0], b.state[0])


def test_staggered_states_train_and_pickle_like_plain_ones():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1 << 16)
    g = rng.standard_normal(1 << 16)
    state = O.setup(O.Adam(), x)
    plain = O.setup(O.Adam(), x)
    plain.state = tuple(np.array(s) if isinstance(s, np.ndarray) else s for s in plain.state)
    assert plain.state[0].base is None and state.state[0].base is not None
    x1, x2 = x.copy(), x.copy()
    for _ in range(3):
        O.update_(state, x1, g)
        O.update_(plain, x2, g)
    np.testing.assert_array_equal(x1, x2)
    again = pickle.loads(pickle.dumps(state))
    for a, b in zip(again.state[:2], state.state[:2]):
        np.testing.assert_array_equal(a, b)

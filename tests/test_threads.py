"""The thread pool: settable, read from the environment, and safe across fork()."""

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

import optimisers
from optimisers import _core


@pytest.fixture
def restore_threads():
    before = optimisers.get_num_threads()
    yield
    optimisers.set_num_threads(before)


def test_default_is_the_machine_cores(restore_threads):
    code = "import optimisers; print(optimisers.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k != "OPTIMISERS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert int(out.stdout) == os.cpu_count()


def test_environment_variable_sets_the_default():
    code = "import optimisers; print(optimisers.get_num_threads())"
    env = {**os.environ, "OPTIMISERS_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "3"


def test_set_num_threads(restore_threads):
    optimisers.set_num_threads(1)
    assert optimisers.get_num_threads() == 1
    optimisers.set_num_threads(4)
    assert optimisers.get_num_threads() == 4
    with pytest.raises(ValueError, match="at least 1"):
        optimisers.set_num_threads(0)
    assert optimisers.get_num_threads() == 4


def _step_in_child(queue):
    x = np.ones(300_000, np.float32)
    state = optimisers.setup(optimisers.Adam(0.1), x)
    state, x = optimisers.update_(state, x, np.ones_like(x))
    queue.put(float(x[0]))


# JAX (used by other tests in the same process) warns at every fork() that its
# own threads will not survive it; the kernel's pool is what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_forked_child_can_still_run_the_pool(restore_threads):
    optimisers.set_num_threads(2)
    # Warm the pool in the parent first: its threads do not survive fork().
    x = np.ones(300_000, np.float32)
    optimisers.update_(optimisers.setup(optimisers.Descent(), x), x, np.ones_like(x))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_step_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in the kernel's thread pool")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(0.9, rel=1e-6)


def test_isa_can_be_chosen_among_those_available():
    levels = _core.available_isas()
    assert levels[0] == "baseline"
    active = _core.get_isa()
    assert active == levels[-1]
    try:
        for level in levels:
            _core.set_isa(level)
            assert _core.get_isa() == level
    finally:
        _core.set_isa(active)
    with pytest.raises(ValueError, match="unknown instruction set"):
        _core.set_isa("sse9")

"""Shared test configuration: the one rule table that drives the rule tests.

Like optax's ``alias_test``, every rule-correctness test (tests/test_rules.py)
runs over ``RULES``: every rule at its defaults and at non-default settings,
the chains of Optimisers.jl's ``test/rules.jl``, ``ClipNorm`` with every kind of
``p``, ``AccumGrad`` chains, nested and empty chains, and ``MixedPrecision``.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import optimisers as o
from optimisers import _core, axon

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `import oracle`

# Property-based tests run a fixed number of derandomised examples by default
# (the same ones on every run and in CI); HYPOTHESIS_PROFILE=explore searches more.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

Chain = o.OptimiserChain


def rule_id(rule) -> str:
    """A short readable pytest id: the class name and the fields that differ from
    the defaults (``Adam()``, ``Adam(eta=0.01,beta=(0.8,0.99))``, ``Chain[...]``)."""
    name = type(rule).__name__
    if isinstance(rule, o.OptimiserChain):
        return "Chain[" + ",".join(rule_id(r) for r in rule.rules) + "]"
    if isinstance(rule, o.MixedPrecision):
        return f"MixedPrecision[{np.dtype(rule.dtype).name},{rule_id(rule.rule)}]"
    fields = {k: v for k, v in vars(rule).items() if not k.startswith("_")}
    try:
        default = {k: v for k, v in vars(type(rule)()).items() if not k.startswith("_")}
    except TypeError:  # no default for a field (AccumGrad's n)
        default = {}
    shown = ",".join(f"{k}={v!r}" for k, v in fields.items() if default.get(k, ...) != v)
    return f"{name}({shown})".replace(" ", "")


# Non-default hyper-parameters shared by the Adam family.
_ADAM_ARGS = (0.01, (0.8, 0.99), 1e-6)

_TABLE = [
    # --- every rule at default settings
    o.Descent(),
    o.Momentum(),
    o.Nesterov(),
    o.Rprop(),
    o.RMSProp(),
    o.Adam(),
    o.RAdam(),
    o.AdaMax(),
    o.OAdam(),
    o.AdaGrad(),
    o.AdaDelta(),
    o.AMSGrad(),
    o.NAdam(),
    o.AdamW(),
    o.AdaBelief(),
    o.Lion(),
    o.WeightDecay(),
    o.SignDecay(),
    o.ClipGrad(),
    o.ClipNorm(),
    o.AccumGrad(3),
    o.InvDecay(),
    o.Yogi(),
    o.NoisySGD(),
    o.TrustRatio(),
    o.Lamb(),
    o.Lars(),
    # --- every rule at non-default settings
    o.Descent(0.5),
    o.Momentum(0.05, 0.5),
    o.Nesterov(0.01, 0.7),
    o.Rprop(0.01, (0.3, 1.5), (1e-4, 0.05)),
    o.RMSProp(0.01, 0.8, 1e-6),
    o.RMSProp(centred=True),
    o.RMSProp(0.01, 0.5, 1e-4, centred=True),
    o.Adam(*_ADAM_ARGS),
    o.RAdam(*_ADAM_ARGS),
    o.AdaMax(*_ADAM_ARGS),
    o.OAdam(0.01, (0.6, 0.95), 1e-6),
    o.AdaGrad(0.05, 1e-6),
    o.AdaDelta(0.8, 1e-6),
    o.AMSGrad(*_ADAM_ARGS),
    o.NAdam(*_ADAM_ARGS),
    o.AdamW(couple=False),
    o.AdamW(0.01, (0.8, 0.99), 0.1, 1e-6),
    o.AdamW(0.01, (0.8, 0.99), 0.1, 1e-6, couple=False),
    o.AdaBelief(0.01, (0.8, 0.99), 1e-10),
    o.Lion(0.01, (0.8, 0.95)),
    o.WeightDecay(0.1),
    o.SignDecay(0.05),
    o.ClipGrad(0.5),
    o.ClipNorm(1.0, 1, throw=False),
    o.AccumGrad(1),
    o.InvDecay(0.5),
    o.Yogi(0.05, (0.8, 0.99), 1e-3, initial_accumulator=1e-6),
    o.NoisySGD(0.05, 0.01, 0.8, seed=2**63 + 12345),
    # (min_norm of 3 is above the norms of the small shapes' arrays, below the large')
    o.TrustRatio(3.0, 0.5, 1e-3),
    o.Lamb(0.05, (0.8, 0.99), 1e-6, 0.1, min_norm=3.0),
    o.Lars(0.05, 0.1, 0.01, 0.8),
    o.Lars(0.05, 0.1, 0.01, 0.8, nesterov=True),
    # --- ClipNorm with every kind of p, inside chains
    *(Chain(o.ClipNorm(0.5, p), o.Momentum(0.1)) for p in (2, 1, math.inf, -math.inf, 0, 3.5)),
    # --- the chains of Optimisers.jl's test/rules.jl
    Chain(o.SignDecay(0.001), o.Adam(0.001)),
    Chain(o.ClipNorm(), o.Adam(0.001)),
    Chain(o.ClipGrad(0.5), o.Momentum()),
    Chain(o.WeightDecay(), o.OAdam(), o.ClipGrad(1)),
    # --- ClipNorm in the middle, at the end, and twice (also back to back)
    Chain(o.Momentum(0.1), o.ClipNorm(0.05), o.Descent(0.5)),
    Chain(o.WeightDecay(0.01), o.ClipNorm(1.0, 1), o.Adam(0.01), o.ClipGrad(0.001)),
    Chain(o.ClipNorm(1.0), o.Momentum(0.1), o.ClipNorm(0.01, math.inf)),
    Chain(o.ClipNorm(2.0), o.ClipNorm(0.5, 1), o.Descent(1.0)),
    # --- AccumGrad chains
    Chain(o.AccumGrad(3), o.Adam(0.01)),
    Chain(o.ClipGrad(0.5), o.AccumGrad(3), o.Momentum()),
    Chain(o.AccumGrad(3), o.ClipNorm(0.5), o.Descent(0.5)),
    Chain(o.ClipNorm(1.0), o.AccumGrad(3), o.Nesterov(0.01)),
    Chain(o.AccumGrad(2), o.AccumGrad(3), o.Descent(0.5)),
    # --- old Flux's chains: the decay before the momentum, after Adam
    Chain(o.InvDecay(0.1), o.Momentum(0.1)),
    Chain(o.Adam(0.01), o.InvDecay(0.1)),
    # --- optimisers.axon, at defaults (yogi's and noisy_sgd's are Yogi() and
    # NoisySGD() above) and with every option changed
    *(f() for f in (axon.adam, axon.adamw, axon.adabelief, axon.adagrad, axon.radam)),
    *(f() for f in (axon.rmsprop, axon.sgd)),
    axon.adam(0.01, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-10),
    axon.adamw(0.01, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-10, decay=0.1),
    axon.adabelief(0.01, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10),
    axon.adagrad(0.05, eps=1e-4),
    axon.radam(0.01, b1=0.8, b2=0.9, eps=1e-6, eps_root=1e-10, threshold=4.5),
    axon.rmsprop(0.05, decay=0.8, eps=1e-4, initial_scale=0.5),
    axon.rmsprop(0.05, centered=True, momentum=0.5, initial_scale=0.5),
    axon.rmsprop(0.05, momentum=0.7, nesterov=True),
    axon.sgd(0.05, momentum=0.8),
    axon.sgd(0.05, momentum=0.8, nesterov=True),
    axon.yogi(0.05, initial_accumulator_value=1e-6, b1=0.8, b2=0.99, eps=1e-3, eps_root=1e-8),
    # (axon.lamb() is Lamb() above)
    axon.lamb(0.05, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-10, decay=0.1, min_norm=3.0),
    # --- trust ratios inside chains: after a rule with state, and before one
    Chain(o.Adam(0.01), o.TrustRatio(min_norm=0.5)),
    Chain(o.TrustRatio(coef=0.1), o.Momentum(0.1)),
    # --- noise inside a chain, before and after other rules
    Chain(o.ClipGrad(0.5), o.NoisySGD(0.1, seed=3), o.Momentum(0.1)),
    # --- empty, single and nested chains
    Chain(),
    Chain(o.Adam()),
    Chain(Chain(o.ClipGrad(1.0), o.Momentum()), Chain(), o.Descent(0.5)),
    Chain(Chain(o.AccumGrad(2), Chain(o.RMSProp(centred=True))), o.WeightDecay(0.01)),
    # --- MixedPrecision
    o.MixedPrecision(np.float64, o.Adam()),
    o.MixedPrecision(o.Adam()),
    o.MixedPrecision(np.float64, Chain(o.ClipNorm(1.0), o.AccumGrad(2), o.Momentum(0.1))),
    # --- wrappers and whole-tree rules (alone in a tree of one leaf: per leaf)
    o.Scheduled(o.Adam(), eta=o.schedules.cosine_decay(0.01, 8)),
    o.Scheduled(
        Chain(o.ClipGrad(1.0), o.Momentum()),
        eta=o.schedules.linear(0.1, 0.01, 5),
        rho=o.schedules.constant(0.8),
    ),
    o.Lookahead(o.Adam(0.01), k=3),
    o.Lookahead(Chain(o.AccumGrad(2), o.Descent(0.1)), k=2, alpha=0.3),
    o.SkipNonFinite(o.Adam()),
    o.SkipNonFinite(Chain(o.ClipNorm(1.0), o.Momentum()), max_consecutive=3),
    o.ClipGlobalNorm(1.0),
    o.ClipGlobalNorm(1.0, math.inf, throw=False),
    Chain(o.ClipGlobalNorm(0.5, 1), o.Adam()),
]

RULES = [pytest.param(r, id=rule_id(r)) for r in _TABLE]

_ids = [p.id for p in RULES]
assert len(set(_ids)) == len(_ids), "rule table ids must be unique"


def is_clipnorm(rule) -> bool:
    """Whether a ClipNorm, ClipGlobalNorm or trust ratio is anywhere in the rule
    (its norm sums in another order)."""
    if isinstance(rule, (o.ClipNorm, o.ClipGlobalNorm, o.TrustRatio, o.Lamb, o.Lars)):
        return True
    if isinstance(rule, o.OptimiserChain):
        return any(is_clipnorm(r) for r in rule.rules)
    if isinstance(rule, (o.MixedPrecision, o.Scheduled, o.Lookahead, o.SkipNonFinite)):
        return is_clipnorm(rule.rule)
    return False


def global_clip(rule):
    """The ClipGlobalNorm a rule starts with (its step is the whole tree's), or None."""
    if isinstance(rule, o.OptimiserChain) and rule.rules:
        rule = rule.rules[0]
    return rule if isinstance(rule, o.ClipGlobalNorm) else None


@pytest.fixture(params=RULES)
def rule(request):
    """Every entry of the rule table."""
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    """The kernel's two element types."""
    return np.dtype(request.param)


@pytest.fixture
def kernel_settings():
    """Lets a test change the kernel's thread count and instruction set, and puts
    both back as they were afterwards."""
    threads, isa = _core.get_num_threads(), _core.get_isa()
    yield _core
    _core.set_num_threads(threads)
    _core.set_isa(isa)

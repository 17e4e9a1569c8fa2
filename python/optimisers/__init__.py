"""Optimisers.jl for Python: every optimisation rule as a fused, multi-threaded
SIMD Rust kernel on NumPy arrays, under a thin layer that walks the model tree.

    state = optimisers.setup(optimisers.Adam(), model)     # once
    state, model = optimisers.update_(state, model, grad)  # every step
"""

# The seeds' other two systems, as submodules: optimisers.axon, optimisers.flux.
from . import axon, flux, schedules  # noqa: F401
from ._core import get_num_threads
from ._kernel import set_num_threads
from .adjust import adjust, adjust_
from .checkpoint import load, load_state_dict, save, state_dict
from .destructure import Restructure, destructure
from .duplicated import Duplicated
from .ema import ema, ema_
from .interface import Leaf, freeze_, setup, thaw_, update, update_
from .keypath import KeyPath, getkeypath, haskeypath
from .optimiser import Optimiser
from .plateau import ReduceOnPlateau
from .rules import (
    AbstractRule,
    AccumGrad,
    AdaBelief,
    AdaDelta,
    AdaGrad,
    Adam,
    AdaMax,
    AdamW,
    AMSGrad,
    ClipGrad,
    ClipNorm,
    Descent,
    InvDecay,
    Lamb,
    Lars,
    Lion,
    MixedPrecision,
    Momentum,
    NAdam,
    Nesterov,
    NoisySGD,
    OAdam,
    OptimiserChain,
    RAdam,
    RMSProp,
    Rprop,
    SignDecay,
    TrustRatio,
    WeightDecay,
    Yogi,
)
from .train import train_
from .trainables import trainables
from .tree import register
from .wrappers import ClipGlobalNorm, Lookahead, Scheduled, SkipNonFinite

__version__ = "0.1.0"

__all__ = [
    "AMSGrad",
    "AbstractRule",
    "AccumGrad",
    "AdaBelief",
    "AdaDelta",
    "AdaGrad",
    "AdaMax",
    "Adam",
    "AdamW",
    "ClipGlobalNorm",
    "ClipGrad",
    "ClipNorm",
    "Descent",
    "Duplicated",
    "InvDecay",
    "KeyPath",
    "Lamb",
    "Lars",
    "Leaf",
    "Lion",
    "Lookahead",
    "MixedPrecision",
    "Momentum",
    "NAdam",
    "Nesterov",
    "NoisySGD",
    "OAdam",
    "Optimiser",
    "OptimiserChain",
    "RAdam",
    "RMSProp",
    "ReduceOnPlateau",
    "Restructure",
    "Rprop",
    "Scheduled",
    "SignDecay",
    "SkipNonFinite",
    "TrustRatio",
    "WeightDecay",
    "Yogi",
    "adjust",
    "adjust_",
    "destructure",
    "ema",
    "ema_",
    "freeze_",
    "get_num_threads",
    "getkeypath",
    "haskeypath",
    "load",
    "load_state_dict",
    "register",
    "save",
    "schedules",
    "set_num_threads",
    "setup",
    "state_dict",
    "thaw_",
    "train_",
    "trainables",
    "update",
    "update_",
]

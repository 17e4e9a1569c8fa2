"""Python rules the tests share: custom subclasses of `AbstractRule`."""

import numpy as np

import optimisers as opt


class DecayDescent(opt.AbstractRule):
    """The custom rule of API.md (and of Optimisers.jl's docs):
    update `eta / √state * dx`, state counting the steps."""

    def __init__(self, eta=0.1):
        self.eta = eta

    def init(self, x):
        return 1

    def apply(self, state, x, dx):
        return state + 1, (self.eta / state**0.5) * dx


class InPlaceMomentum(opt.AbstractRule):
    """A Python rule that mutates its own state arrays, as API.md allows."""

    def init(self, x):
        return np.zeros_like(x)

    def apply(self, state, x, dx):
        state *= 0.9
        state += dx
        return state, 0.1 * state

"""Checkpoints: a state tree as a flat dict of NumPy arrays, and as an ``.npz`` file.

For each ``Leaf``, at the key-path string ``p`` of its first place in tree
order (``"layers.0.weight"``; a tied ``Leaf`` once), the dict holds:

- ``p + ":rule"``: the rule as data, JSON in a 0-d string array (class names,
  hyper-parameters, built-in schedules);
- ``p + ":frozen"``: a 0-d bool array;
- ``p + ":layout"``: the state's structure as JSON (tuples, ``None``, Python
  numbers, and slots for the arrays);
- ``p + ":state.0"``, ``":state.1"``, …: the state's arrays and NumPy
  scalars (as 0-d arrays), each in its own dtype, so a resumed run continues
  bit for bit.

Nothing in it is a pickle, and reading one builds only the rules and
schedules of this package, by name, through their validating constructors:
loading an untrusted file runs no code.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import axon as _axon
from . import rules as _rules
from . import schedules as _schedules
from . import tree
from . import wrappers as _wrappers
from ._leaf import Leaf
from .keypath import KeyPath
from .rules import AbstractRule, OptimiserChain, _Rule
from .wrappers import Scheduled

__all__ = ["load", "load_state_dict", "save", "state_dict"]


# ---------------------------------------------------------------------------
# Rules and schedules as data


def _rule_data(rule: Any, where: str) -> Any:
    if isinstance(rule, OptimiserChain):
        return {"rule": "OptimiserChain", "rules": [_rule_data(r, where) for r in rule.rules]}
    if isinstance(rule, Scheduled):
        return {
            "rule": "Scheduled",
            "of": _rule_data(rule.rule, where),
            "schedules": {k: _value_data(s, where) for k, s in rule.schedules},
        }
    name = type(rule).__name__
    if isinstance(rule, _Rule) and _rule_classes().get(name) is type(rule):
        fields = {f: _value_data(getattr(rule, f), where) for f in rule._field_names()}
        return {"rule": name, "fields": fields}
    raise TypeError(
        f"the rule at {where} cannot be saved as data: {rule!r} is not one of "
        f"optimisers' built-in rules"
    )


def _value_data(v: Any, where: str) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)):
        return {"tuple": [_value_data(x, where) for x in v]}
    if isinstance(v, AbstractRule):
        return _rule_data(v, where)
    if isinstance(v, type) and issubclass(v, np.floating):
        return {"dtype": np.dtype(v).name}
    if isinstance(v, _schedules.Schedule) and _schedules.BUILT_IN.get(type(v).__name__) is type(v):
        args = {a: getattr(v, a) for a in v._args}
        if "boundaries_and_scales" in args:
            args["boundaries_and_scales"] = [list(p) for p in args["boundaries_and_scales"].items()]
        return {
            "schedule": type(v).__name__,
            "args": {a: _value_data(x, where) for a, x in args.items()},
        }
    raise TypeError(
        f"the rule at {where} cannot be saved as data: it holds {v!r}, which is neither a "
        f"number nor one of optimisers.schedules"
    )


def _rule_classes() -> dict[str, type]:
    """The built-in rules by name: those of ``rules``, ``wrappers`` and ``axon``."""
    return {
        name: obj
        for module in (_rules, _wrappers, _axon)
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, _Rule) and not name.startswith("_")
    }


def _rule_from(d: Any) -> AbstractRule:
    if not isinstance(d, dict) or not isinstance(d.get("rule"), str):
        raise ValueError(f"not a rule: {d!r}")
    name = d["rule"]
    if name == "OptimiserChain":
        return OptimiserChain(*(_rule_from(r) for r in d["rules"]))
    if name == "Scheduled":
        return Scheduled(
            _rule_from(d["of"]), **{k: _value_from(v) for k, v in d["schedules"].items()}
        )
    cls = _rule_classes().get(name)
    if cls is None:
        raise ValueError(f"no built-in rule is called {name!r}")
    return cls(**{k: _value_from(v) for k, v in d["fields"].items()})


def _value_from(v: Any) -> Any:
    if not isinstance(v, dict):
        if isinstance(v, list):
            raise ValueError(f"unexpected list {v!r}")
        return v
    if "tuple" in v:
        return tuple(_value_from(x) for x in v["tuple"])
    if "rule" in v:
        return _rule_from(v)
    if "dtype" in v:
        dtype = np.dtype(str(v["dtype"]))
        if dtype.kind != "f":
            raise ValueError(f"not a floating dtype: {dtype}")
        return dtype.type
    if "schedule" in v:
        cls = _schedules.BUILT_IN.get(v["schedule"])
        if cls is None:
            raise ValueError(f"no built-in schedule is called {v['schedule']!r}")
        args = {k: _value_from(x) for k, x in v["args"].items()}
        if "boundaries_and_scales" in args:
            args["boundaries_and_scales"] = dict(args["boundaries_and_scales"])
        return cls(**args)
    raise ValueError(f"unexpected {v!r}")


# ---------------------------------------------------------------------------
# States as a layout and a list of arrays


def _layout(state: Any, arrays: list[np.ndarray], where: str) -> Any:
    if state is None:
        return None
    if isinstance(state, (bool, np.bool_)) and not isinstance(state, np.ndarray):
        return {"bool": bool(state)}
    if isinstance(state, np.ndarray):
        arrays.append(state)
        return {"array": len(arrays) - 1}
    if isinstance(state, np.generic):
        arrays.append(np.asarray(state))
        return {"scalar": len(arrays) - 1}
    if isinstance(state, int):
        return {"int": state}
    if isinstance(state, float):
        return {"float": state}
    if isinstance(state, tuple) and not tree._is_namedtuple(state):
        return {"tuple": [_layout(s, arrays, where) for s in state]}
    raise TypeError(f"the state at {where} holds {type(state).__name__}, which cannot be saved")


def _fits(saved: Any, current: Any) -> bool:
    """Whether two layouts have the same structure (numbers may differ)."""
    if saved is None or current is None:
        return saved is None and current is None
    if (
        not isinstance(saved, dict)
        or not isinstance(current, dict)
        or saved.keys() != current.keys()
    ):
        return False
    (kind,) = current
    if kind == "tuple":
        return (
            isinstance(saved["tuple"], list)
            and len(saved["tuple"]) == len(current["tuple"])
            and all(_fits(a, b) for a, b in zip(saved["tuple"], current["tuple"]))
        )
    if kind in ("array", "scalar"):
        return saved[kind] == current[kind]
    value = saved[kind]
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, (int, float) if kind == "float" else int) and not isinstance(
        value, bool
    )


def _rebuilt(layout: Any, arrays: list[Any]) -> Any:
    if layout is None:
        return None
    ((kind, v),) = layout.items()
    if kind == "tuple":
        return tuple(_rebuilt(x, arrays) for x in v)
    if kind == "array":
        return arrays[v]
    if kind == "scalar":
        return arrays[v][()]  # a NumPy scalar of its dtype
    return {"bool": bool, "int": int, "float": float}[kind](v)


# ---------------------------------------------------------------------------
# state_dict / load_state_dict


def path_key(kp: KeyPath) -> str:
    """A key path as a checkpoint key: its keys joined by dots (``"layers.0.weight"``)."""
    return ".".join(str(k) for k in kp.keys)


def _leaves(state: Any) -> dict[str, Any]:
    """Every ``Leaf`` of the state tree by the key string of its first place."""
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def walk(x: Any, kp: KeyPath) -> None:
        if isinstance(x, Leaf):
            if id(x) not in seen:
                seen.add(id(x))
                key = path_key(kp)
                if key in found:
                    raise ValueError(
                        f"two parameters have the checkpoint key {key!r} (one at {kp!r}): "
                        f"rename a key so that their dotted paths differ"
                    )
                found[key] = x
            return
        if isinstance(x, (np.ndarray, numbers.Number, np.generic)):
            raise TypeError(f"expected a state tree from setup, found {type(x).__name__} at {kp!r}")
        for k, c in tree.children(x) or ():
            walk(c, kp.child(k))

    walk(state, KeyPath())
    return found


def state_dict(state: Any) -> dict[str, np.ndarray]:
    """The state tree as a flat dict of NumPy arrays, keyed by key-path strings
    (see the module's docstring); the arrays are copies."""
    return _state_dict(state, copy=True)


def _state_dict(state: Any, copy: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, leaf in _leaves(state).items():
        where = repr(key)
        arrays: list[np.ndarray] = []
        layout = _layout(leaf.state, arrays, where)
        out[key + ":rule"] = np.array(json.dumps(_rule_data(leaf.rule, where)))
        out[key + ":frozen"] = np.array(leaf.frozen)
        out[key + ":layout"] = np.array(json.dumps(layout))
        for i, a in enumerate(arrays):
            if a.dtype.hasobject:
                raise TypeError(
                    f"the state at {where} holds an object array, which cannot be saved"
                )
            out[f"{key}:state.{i}"] = np.array(a, order="C", copy=True) if copy else a
    return out


def _text(sd: dict[str, Any], key: str) -> str:
    v = sd.get(key)
    if isinstance(v, str):
        return v
    if isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind == "U":
        return str(v[()])
    raise ValueError(f"the checkpoint's {key!r} should be a string, got {_what(v)}")


def _what(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of dtype {v.dtype} and shape {v.shape}"
    return "nothing" if v is None else type(v).__name__


def _read(sd: dict[str, Any], key: str, names: list[str], leaf: Any) -> tuple[Any, Any, bool]:
    """The rule, the new state and the frozen flag saved for ``leaf`` at
    ``key``, checked against it; writes nothing."""
    where = repr(key)
    try:
        rule = _rule_from(json.loads(_text(sd, key + ":rule")))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"the rule saved at {where} is not valid: {err}") from None
    frozen = sd.get(key + ":frozen")
    if not isinstance(frozen, (bool, np.bool_, np.ndarray)) or np.asarray(frozen).dtype != bool:
        raise ValueError(
            f"the checkpoint's frozen flag at {where} should be a bool, got {_what(frozen)}"
        )
    try:
        layout = json.loads(_text(sd, key + ":layout"))
    except ValueError as err:
        raise ValueError(f"the state layout saved at {where} is not valid: {err}") from None
    mine: list[np.ndarray] = []
    current = _layout(leaf.state, mine, where)
    if not _fits(layout, current):
        raise ValueError(
            f"the state saved at {where} (for {rule!r}) does not fit the state of this "
            f"model's parameter there (for {leaf.rule!r})"
        )
    saved = []
    for i, have in enumerate(mine):
        name = f"{key}:state.{i}"
        a = sd.get(name)
        if isinstance(a, np.generic):
            a = np.asarray(a)
        if not isinstance(a, np.ndarray) or a.dtype.hasobject:
            raise ValueError(f"the checkpoint's {name!r} should be an array, got {_what(a)}")
        if a.dtype != have.dtype or a.shape != have.shape:
            raise ValueError(
                f"the state saved at {where} holds an array of {a.dtype}{list(a.shape)} "
                f"where this model's has {have.dtype}{list(have.shape)}"
            )
        saved.append(a)
    expected = {f"{key}:{f}" for f in ("rule", "frozen", "layout")}
    expected.update(f"{key}:state.{i}" for i in range(len(mine)))
    extra = [k for k in names if k not in expected]
    if extra:
        raise ValueError(
            f"the checkpoint has {extra[0]!r}, which the state at {where} does not hold"
        )
    return rule, (layout, mine, saved), bool(frozen)


def _write(leaf: Any, rule: Any, new: Any, frozen: bool) -> None:
    layout, mine, saved = new
    arrays = []
    for have, a in zip(mine, saved):
        if have.flags.writeable:
            np.copyto(have, a)  # the arrays stay where setup put them
            arrays.append(have)
        else:
            arrays.append(a.copy())
    leaf.rule, leaf.state, leaf.frozen = rule, _rebuilt(layout, arrays), frozen


def load_state_dict(
    state: Any, sd: dict[str, Any], *, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Write the checkpoint ``sd`` (from :func:`state_dict`) into ``state``, a
    state tree that ``setup`` built for the current model, matched by key
    path: each saved rule, state and frozen flag replaces the leaf's.

    Returns ``(missing, unexpected)``: the leaves of ``state`` that ``sd`` does
    not have, and the saved leaves ``state`` does not have. With ``strict``
    either raises ``KeyError``. An array of another shape or dtype raises
    ``ValueError`` naming the path. Whatever it raises, it changes nothing.
    """
    if not isinstance(sd, Mapping):
        raise TypeError(f"load_state_dict expects a dict from state_dict, got {type(sd).__name__}")
    sd = dict(sd)
    leaves = _leaves(state)
    saved: dict[str, list[str]] = {}
    for k in sd:
        if not isinstance(k, str) or ":" not in k:
            raise ValueError(f"the checkpoint has a key {k!r} that is not a key path and field")
        saved.setdefault(k.rpartition(":")[0], []).append(k)
    missing = [k for k in leaves if k not in saved]
    unexpected = [k for k in saved if k not in leaves]
    if strict and (missing or unexpected):
        raise KeyError(
            f"the checkpoint does not match the state tree: missing {missing}, unexpected {unexpected}"
        )
    try:
        reads = {k: _read(sd, k, saved[k], leaf) for k, leaf in leaves.items() if k in saved}
    except RecursionError:  # a crafted rule or layout nested without end
        raise ValueError("the checkpoint holds a rule or layout nested too deeply") from None
    for k, (rule, new, frozen) in reads.items():
        _write(leaves[k], rule, new, frozen)
    return missing, unexpected


def save(file: Any, state: Any) -> None:
    """Write :func:`state_dict` of ``state`` to ``file`` (a path or a binary
    file) as an ``.npz`` archive without pickles."""
    np.savez(file, **_state_dict(state, copy=False))  # savez copies them into the file


def load(file: Any, state: Any, *, strict: bool = True) -> tuple[list[str], list[str]]:
    """Read a checkpoint written by :func:`save` into ``state``, as
    :func:`load_state_dict` does. A file that is not such an archive (not a
    zip, truncated, holding pickled objects) raises ``ValueError`` and changes
    nothing."""
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as err:  # whatever a damaged or crafted file makes NumPy raise
        raise ValueError(f"{file!r} is not a readable checkpoint: {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{file!r} is not a checkpoint: it holds one array, not an .npz archive")
    try:
        with archive:
            sd = {k: archive[k] for k in archive.files}
    except Exception as err:
        raise ValueError(f"{file!r} is not a readable checkpoint: {err}") from None
    return load_state_dict(state, sd, strict=strict)

"""Every exported rule is in every table the tests and the README keep.

A rule added to ``optimisers`` but forgotten in one of these tables would not be
tested there (or documented), silently: this test names the table instead.
"""

from __future__ import annotations

import inspect
import pathlib
import re

import conftest
import oracle
import pytest
import test_oracle_selfcheck
import test_rule_objects

import optimisers as o

RULE_NAMES = sorted(
    name
    for name in o.__all__
    if inspect.isclass(getattr(o, name))
    and issubclass(getattr(o, name), o.AbstractRule)
    and getattr(o, name) is not o.AbstractRule
)
README = pathlib.Path(__file__).parent.parent / "README.md"


def _rule_types(rule) -> set[str]:
    """The names of `rule`'s class and of every rule inside it (chains, wrappers)."""
    names = {type(rule).__name__}
    if isinstance(rule, o.OptimiserChain):
        for r in rule.rules:
            names |= _rule_types(r)
    if isinstance(rule, (o.MixedPrecision, o.Scheduled, o.Lookahead, o.SkipNonFinite)):
        names |= _rule_types(rule.rule)
    return names


def _readme_rules() -> set[str]:
    return set(re.findall(r"^\| `(\w+)` \|", README.read_text(), flags=re.MULTILINE))


TABLES = {
    "tests/conftest.py's rule table": lambda: set().union(*map(_rule_types, conftest._TABLE)),
    "tests/oracle.py's init table": lambda: set(oracle._INIT),
    "tests/oracle.py's apply table": lambda: set(oracle._APPLY),
    "tests/test_oracle_selfcheck.py's stand-in rules": lambda: {
        name for name, v in vars(test_oracle_selfcheck).items() if inspect.isclass(v)
    },
    "tests/test_rule_objects.py's SPEC and ALL_CLASSES": lambda: set(test_rule_objects.ALL_CLASSES),
    "README.md's rule table": _readme_rules,
}


def test_the_package_exports_rules():
    assert {"Adam", "OptimiserChain", "MixedPrecision", "AccumGrad"} <= set(RULE_NAMES)


@pytest.mark.parametrize("table", list(TABLES))
def test_every_exported_rule_is_in_the_table(table):
    missing = [name for name in RULE_NAMES if name not in TABLES[table]()]
    assert missing == [], f"{table} lacks the rule(s) {missing}; add them there"


def test_spec_covers_every_rule_with_plain_fields():
    # The rules made of rules have tests of their own in test_rule_objects.
    composite = {"OptimiserChain", "AccumGrad", "MixedPrecision", *test_rule_objects.WRAPPERS}
    missing = [n for n in RULE_NAMES if n not in composite and n not in test_rule_objects.SPEC]
    assert missing == [], f"test_rule_objects.SPEC lacks {missing}"

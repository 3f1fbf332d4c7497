"""`RedisStore` is six domain parts mixed into one class (store/redis/store.py): a method or
an attribute that two parts both define would silently resolve to one of them (the first
in the MRO), so a part's change could break another's domain without a failing import.
These checks read the classes and their source; they run without Redis."""

from __future__ import annotations

import inspect
import re
from collections import defaultdict

from store.redis.part import Part
from store.redis.store import RedisStore

PARTS = [c for c in RedisStore.__mro__[1:] if issubclass(c, Part) and c is not Part]


def _own_names(cls: type) -> set[str]:
    return {n for n in vars(cls) if not (n.startswith("__") and n.endswith("__"))}


#: `self.x = ...`, `self.x += ...`, `self.x: T = ...` (not `==`). A regex, not `ast`: on
#: CPython 3.11.7, `ast.parse` inside an xdist worker failed with "AST constructor
#: recursion depth mismatch" (gh-106905), as the other ast tests found (they parse in a child).
_ASSIGNED = re.compile(r"\bself\.(\w+)\s*(?::[^=\n]+)?(?:[-+*/%|&^@]|//|<<|>>|\*\*)?=(?!=)")


def _self_attributes(cls: type) -> set[str]:
    """Names a class's methods assign on `self`. Read method by method: for a class,
    `inspect.getsource` itself parses the module with `ast` (the same CPython bug)."""
    found: set[str] = set()
    for value in vars(cls).values():
        if isinstance(value, property):
            funcs = [value.fget, value.fset, value.fdel]
        else:
            funcs = [getattr(value, "__func__", value)]
        for f in funcs:
            if inspect.isfunction(f):
                found |= set(_ASSIGNED.findall(inspect.getsource(f)))
    return found


def test_the_store_is_made_of_six_parts() -> None:
    assert {c.__name__ for c in PARTS} == {
        "Accounts",
        "Logins",
        "Conversations",
        "Posts",
        "Moderation",
        "Presence",
    }


def test_no_two_parts_define_the_same_method_or_class_attribute() -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for cls in [*PARTS, RedisStore]:
        for name in _own_names(cls):
            owners[name].append(cls.__name__)
    clashes = {name: who for name, who in owners.items() if len(who) > 1}
    assert clashes == {}, f"defined by more than one part of RedisStore: {clashes}"


def test_no_part_defines_what_the_shared_base_does() -> None:
    base = _own_names(Part) | _self_attributes(Part)
    for cls in [*PARTS, RedisStore]:
        shadowed = _own_names(cls) & base
        assert not shadowed, f"{cls.__name__} redefines Part's {sorted(shadowed)}"


def test_no_two_parts_keep_state_under_the_same_attribute() -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for cls in PARTS:
        for name in _self_attributes(cls):
            owners[name].append(cls.__name__)
    shared = _self_attributes(Part)
    clashes = {n: who for n, who in owners.items() if len(who) > 1 or n in shared}
    assert clashes == {}, f"instance state set by more than one part (or over Part's): {clashes}"

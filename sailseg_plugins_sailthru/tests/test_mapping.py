"""flatten_vars: how Segment traits become Sailthru vars, one case per kind of value.

Why here and not only in test_sinks: the sinks' tests send one realistic identify; these pin
every branch of the walk (the scalar fast path, mappings that are not dicts, tuples, arrays,
keys that are not strings), so a faster walk cannot change what reaches Sailthru.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

from sailseg_plugins_sailthru.mapping import flatten_vars


class Plan(enum.StrEnum):
    PRO = "pro"


class Count(int):
    pass


def test_scalars_keep_their_values_under_snake_case_names() -> None:
    traits = {"firstName": "Grace", "logins": 3, "ltv": 1.25, "newsletter": True, "phone": None}
    assert flatten_vars(traits) == {
        "first_name": "Grace", "logins": 3, "ltv": 1.25, "newsletter": True, "phone": None,
    }


def test_scalar_subclasses_are_kept_as_given() -> None:
    out = flatten_vars({"plan": Plan.PRO, "seats": Count(4)})
    assert out["plan"] is Plan.PRO and out["seats"] == 4 and type(out["seats"]) is Count


def test_nested_mappings_of_any_kind_become_prefixed_names() -> None:
    traits: dict[str, Any] = {
        "company": {"name": "Initech", "employeeCount": 250, "address": {"zipCode": "94103"}},
        "prefs": MappingProxyType({"theme": "dark"}),
        "ordered": OrderedDict([("a", 1)]),
        "empty": {},
    }
    assert flatten_vars(traits) == {
        "company_name": "Initech", "company_employee_count": 250,
        "company_address_zip_code": "94103", "prefs_theme": "dark", "ordered_a": 1,
    }


def test_arrays_stay_arrays_unless_flattened() -> None:
    traits = {"tags": ["a", "b"], "pair": (1, 2)}
    out = flatten_vars(traits)
    assert out == {"tags": ["a", "b"], "pair": [1, 2]} and type(out["pair"]) is list
    assert flatten_vars(traits, flatten_arrays=True) == {"tags_0": "a", "tags_1": "b", "pair_0": 1, "pair_1": 2}


def test_names_sailthru_would_refuse_are_fixed_or_dropped() -> None:
    traits: dict[Any, Any] = {
        "lists": 1, "2fa": True, "%$.": "nothing left", "last name": "Hopper", 7: "seven",
        "nested": {"%": "dropped", "ok": 1},
    }
    assert flatten_vars(traits) == {
        "seg_lists": 1, "v_2fa": True, "last_name": "Hopper", "v_7": "seven", "nested_ok": 1,
    }


def test_exclude_applies_to_top_level_names_only() -> None:
    traits = {"email": "a@example.com", "company": {"email": "b@example.com"}}
    assert flatten_vars(traits, exclude=frozenset({"email"})) == {"company_email": "b@example.com"}


def test_snake_case_off_keeps_the_case() -> None:
    assert flatten_vars({"firstName": "G", "co": {"zipCode": "1"}}, snake=False) == {
        "firstName": "G", "co_zipCode": "1",
    }


def test_flattening_leaves_no_cyclic_garbage() -> None:
    """Every W1 delivery flattens traits: a walk that leaves reference cycles (a nested
    recursive function does: it holds its own closure cell) hands the garbage collector
    objects to find on every event. Reference counting must free everything at once."""
    import gc

    traits = {"firstName": "Grace", "company": {"name": "Initech", "address": {"city": "Berlin"}},
              "tags": ["a", "b"], "scores": (1, 2)}
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            flatten_vars(traits)
            flatten_vars(traits, flatten_arrays=True)
        assert gc.collect() == 0
    finally:
        gc.enable()

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from snnbench.methods.settings import SettingsError, parse_assignments, settings_from_dict, settings_to_dict


@dataclass(frozen=True)
class Demo:
    coding: Literal["rate", "differential"] = "differential"
    n: int = 8
    c: float = 1.0
    flag: bool = False
    p: float | None = None


def test_coerces_cli_strings():
    s = settings_from_dict(Demo, {"coding": "rate", "n": "4", "c": "2.5", "flag": "true", "p": "none"})
    assert s == Demo(coding="rate", n=4, c=2.5, flag=True, p=None)
    assert settings_to_dict(s)["n"] == 4


def test_unknown_key_lists_valid_settings():
    with pytest.raises(SettingsError) as err:
        settings_from_dict(Demo, {"levels": 3})
    assert "'levels'" in str(err.value) and "coding (rate|differential)" in str(err.value) and "n (int)" in str(err.value)


@pytest.mark.parametrize("values,match", [({"coding": "temporal"}, "one of rate, differential"),
                                          ({"n": "4.5"}, "integer"), ({"flag": "maybe"}, "true or false"),
                                          ({"c": "abc"}, "number")])
def test_bad_values(values, match):
    with pytest.raises(SettingsError, match=match):
        settings_from_dict(Demo, values)


def test_parse_assignments():
    assert parse_assignments(["n=4", "coding = rate"]) == {"n": "4", "coding": "rate"}
    with pytest.raises(SettingsError):
        parse_assignments(["n4"])

"""The cell result record: one frozen schema, its JSON form, old ledger lines."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from snnbench.cell import CellSpec
from snnbench.record import CONTRACT_KEYS, CellResult, is_reference


def test_a_failed_record_holds_the_contract_and_the_spec():
    spec = CellSpec(method="rate", task="digits", model="vgg_small", T=4, settings={"n": "4"})
    record = CellResult.failed(spec, "timeout after 4 s", wall_s=4.0004, failure="timeout")
    data = json.loads(json.dumps(record))
    assert list(data)[:len(CONTRACT_KEYS)] == list(CONTRACT_KEYS)
    assert data["status"] == "failed" and data["per_t"] == {} and data["ann"] is None and data["wall_s"] == 4.0
    assert data["cell_key"] == spec.key() and data["provenance"] == {"spec": spec.to_dict()}
    assert data["failure"] == "timeout" and data["reference"] is False and "n_eval" not in data


def test_a_record_is_frozen_and_replace_makes_a_new_one():
    record = CellResult(method="ann", task="digits", model="m", T=2, status="ok")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "failed"  # type: ignore[misc]
    with pytest.raises(TypeError, match="dataclasses.replace"):
        record["status"] = "failed"  # type: ignore[index]
    again = dataclasses.replace(record, threads=3)
    assert again["threads"] == 3 and "threads" not in record
    assert pickle.loads(pickle.dumps(again)) == again


def test_ledger_lines_round_trip_unknown_keys_included():
    line = {"method": "dcgs", "task": "digits", "model": "m", "settings": {"n": 4}, "T": 2, "metric": "top1",
            "ann": 0.9, "per_t": {"1": {"metric": 0.5}, "2": {"metric": 0.8}}, "status": "ok", "error": None,
            "wall_s": 1.0, "weights_sha256": None, "reference": False, "cell_key": "k", "from_the_future": [1]}
    record = CellResult.from_dict(line)
    assert record.to_dict() == line and record.extra == {"from_the_future": [1]} and record.ok


def test_old_lines_without_the_flag_name_the_reference_by_its_method():
    old_ann = {"method": "ann", "task": "t", "model": "m", "status": "ok"}
    old_rate = {"method": "rate", "task": "t", "model": "m", "status": "ok"}
    assert is_reference(old_ann) and not is_reference(old_rate)
    assert CellResult.from_dict(old_ann).reference and not CellResult.from_dict(old_rate).reference
    assert is_reference({"method": "my_static", "reference": True})

"""The short run of the fuzz targets (``fuzz/``) inside the test suite: every target, with
hypothesis, over mutations of its valid seeds and random bytes, a bounded number of examples each
(about a minute in all).  ``make fuzz`` runs the same targets coverage-guided under atheris for
longer; an input either finds is kept as a regression test in the test module of its parser."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz.harness import inputs
from fuzz.material import material
from fuzz.targets import NAMES, load


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_target(name: str) -> None:
    target = load(name)
    seeds = target.seeds(material())
    assert seeds
    for seed in seeds:  # the valid samples pass every property as they are
        target.check(seed)

    @settings(max_examples=target.examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(inputs(seeds, target.tokens, target.max_len))
    def run(data: bytes) -> None:
        target.check(data)

    run()


def test_every_target_is_listed() -> None:
    from pathlib import Path

    modules = {p.stem for p in (Path(__file__).resolve().parents[1] / "fuzz" / "targets").glob("*.py") if p.stem != "__init__"}
    assert modules == set(NAMES)

"""lmgym.envs.benchmarks exports what the bundled benchmarks import, each name from its module
on first use (so gsm8k never imports sympy)."""

import pytest

import lmgym.envs.benchmarks as benchmarks


def test_every_exported_name_resolves_and_others_do_not():
    for name in benchmarks.__all__:
        assert getattr(benchmarks, name) is not None, name
    assert benchmarks.HubFile.__module__ == "lmgym.envs.benchmarks.hub"
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        benchmarks.Nope  # noqa: B018

"""`lmgym.clients.loop.run`: asyncio.run on uvloop's loop when installed, asyncio's when asked."""

from __future__ import annotations

import asyncio

import pytest

from lmgym.clients.loop import run


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_runs_the_loop_when_installed(monkeypatch):
    pytest.importorskip("uvloop")
    monkeypatch.delenv("LMGYM_EVENT_LOOP", raising=False)
    assert run(loop_module()).startswith("uvloop")


def test_the_standard_loop_when_asked(monkeypatch):
    monkeypatch.setenv("LMGYM_EVENT_LOOP", "asyncio")
    assert run(loop_module()).startswith("asyncio")


def test_the_coroutines_error_goes_through_and_the_loop_is_closed(monkeypatch):
    loops = []

    async def fail():
        loops.append(asyncio.get_running_loop())
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(fail())
    assert loops[0].is_closed()


def test_the_young_generation_is_collected_less_often_while_it_runs():
    import gc

    before = gc.get_threshold()

    async def threshold():
        return gc.get_threshold()

    assert run(threshold())[0] >= 50_000
    assert gc.get_threshold() == before

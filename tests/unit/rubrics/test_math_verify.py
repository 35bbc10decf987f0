"""`lmgym.rubrics.math.math_equal`: math-verify without signal timeouts, safe in threads."""

import asyncio
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from lmgym.rubrics.math import MAX_ANSWER_CHARS, math_equal


@pytest.mark.parametrize(
    "prediction, gold",
    [
        ("12", "12"),
        ("12.0", "12"),
        (" 12 ", "12"),
        ("-4", "-4"),
        ("\\frac{3}{4}", "0.75"),
        ("0.75", "\\frac{3}{4}"),
        ("3/4", "0.75"),
        ("\\dfrac{15}{4}", "3.75"),
        ("2.5", "5/2"),
        ("7/3", "7/3"),
        ("\\frac{7}{3}", "7/3"),
        ("$12$", "12"),
        ("\\(12\\)", "12"),
        ("\\boxed{12}", "12"),
        ("1,200", "1200"),
        ("2^{10}", "1024"),
        ("5!", "120"),
    ],
)
def test_equal_forms(prediction, gold):
    assert math_equal(prediction, gold)


@pytest.mark.parametrize(
    "prediction, gold",
    [
        ("13", "12"),
        ("12.5", "12"),
        ("0.7", "0.75"),
        ("4/3", "3/4"),
        ("-12", "12"),
        ("x", "12"),
        ("twelve", "12"),
        ("12 or 13", "13"),  # hedging between answers is not an answer
        ("", "12"),
        ("   ", "12"),
        (None, "12"),
    ],
)
def test_unequal_or_missing(prediction, gold):
    assert not math_equal(prediction, gold)


def test_over_long_prediction_is_refused():
    assert math_equal("1" * 20, "1" * 20)
    assert not math_equal("1" * (MAX_ANSWER_CHARS + 1), "1" * (MAX_ANSWER_CHARS + 1))


def test_unparseable_gold_is_a_data_error():
    with pytest.raises(ValueError, match="gold"):
        math_equal("12", "")


@pytest.mark.parametrize("prediction", ["10^{10^{10}}", "(10^{100})!", "2^{10^{9}}", "9^{9^{9^{9}}}", "10^{-10^{10}}"])
def test_huge_expressions_are_refused_quickly(prediction):
    """Without signal timeouts these would make sympy run for ever; run in a daemon thread
    so that a regression fails the test instead of hanging the suite."""
    result = []
    worker = threading.Thread(target=lambda: result.append(math_equal(prediction, "12")), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), f"math_equal({prediction!r}) hung"
    assert result == [False]


def test_works_in_worker_threads():
    cases = [("0.75", "3/4", True), ("12.0", "12", True), ("13", "12", False)] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: math_equal(case[0], case[1]), cases))
    assert results == [expected for _, _, expected in cases]


async def test_works_in_the_event_loop_and_to_thread():
    assert math_equal("\\frac{3}{4}", "0.75")
    assert await asyncio.to_thread(math_equal, "\\frac{3}{4}", "0.75")


def test_leaves_sigalrm_alone():
    """math-verify's own timeouts would replace the SIGALRM handler and cancel a pending alarm."""

    def handler(signum, frame):  # pragma: no cover - never fires
        raise AssertionError("alarm fired")

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.alarm(1000)
        assert math_equal("3/4", "0.75")
        assert signal.getsignal(signal.SIGALRM) is handler
        assert signal.alarm(0) > 0  # the alarm was still pending
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

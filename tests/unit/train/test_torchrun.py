"""The ranks of `lmgym train --nproc N` start under lmgym.train.torchrun: a failed run shows
the error a rank printed and no torchrun traceback or agent log; a rank killed by a signal
is named in one line; the exit status is rank 0's when it failed."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")

from cli_runner import process_env  # noqa: E402

from lmgym.train.launch import threads_per_rank  # noqa: E402

RANK_SCRIPT = """
import os, signal, sys, time
rank = int(os.environ["RANK"])
if rank == int(sys.argv[1]):
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"error: rank {rank} stops", file=sys.stderr)
    sys.exit(int(sys.argv[2]))
time.sleep(30)  # the other rank: stopped by torchrun once the first one failed
"""


def launch(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    return subprocess.run([sys.executable, "-m", "lmgym.train.torchrun", "--standalone", "--nproc-per-node=2", str(script), *args],
                          capture_output=True, text=True, timeout=60, env=process_env(), check=False)


def test_a_rank_that_exits_leaves_only_its_own_message_and_its_status(tmp_path):
    result = launch(tmp_path, "0", "3")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == ["error: rank 0 stops"], result.stderr


def test_a_rank_killed_by_a_signal_is_named_in_one_line(tmp_path):
    result = launch(tmp_path, "1", "kill")
    assert result.returncode == 128 + 9
    assert result.stderr.strip().splitlines() == ["training process rank 1 was killed by SIGKILL"], result.stderr


def test_each_rank_gets_its_share_of_the_cores_unless_the_user_set_threads():
    assert threads_per_rank(2, {"OMP_NUM_THREADS": "3"}) == "3"
    assert int(threads_per_rank(2, {})) == max(1, (__import__("os").cpu_count() or 1) // 2)
    assert threads_per_rank(10_000, {}) == "1"

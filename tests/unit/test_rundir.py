"""Run directories: claimed atomically, locked for the life of a run, never reused silently."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from lmgym.errors import UsageError
from lmgym.rundir import RunLock, RunLockedError, claim_run_dir, discard_if_unused, require_fresh_dir, safe_name


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: claim_run_dir("eval", "arithmetic", "gpt-4.1", root=tmp_path), range(16)))
    assert len(set(dirs)) == 16
    assert all(d.is_dir() and not any(d.iterdir()) for d in dirs)


def test_names_are_one_safe_path_segment():
    assert safe_name("wordle,calculator") == "wordle+calculator"
    assert safe_name("Qwen/Qwen3-8B") == "Qwen_Qwen3-8B"
    assert safe_name("../..") == "run"


def test_group_run_directory_has_no_comma(tmp_path):
    path = claim_run_dir("eval", "a,b", "m", root=tmp_path)
    assert "," not in path.name and path.name.startswith("a+b--m--")


def test_a_directory_with_another_runs_files_is_refused(tmp_path):
    require_fresh_dir(tmp_path / "new")  # not there yet: fine
    (tmp_path / "empty").mkdir()
    require_fresh_dir(tmp_path / "empty")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match="--resume .*old"):
        require_fresh_dir(tmp_path / "old")


def test_a_held_run_cannot_be_locked_by_another_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from lmgym.rundir import RunLock
            RunLock(Path({str(tmp_path)!r})).acquire()
            print("held", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the kernel released a killed holder's lock
        pass


def test_a_failed_start_leaves_no_directory_but_a_used_one_stays(tmp_path):
    unused, used = tmp_path / "unused", tmp_path / "used"
    for path in (unused, used):
        path.mkdir()
        with pytest.raises(KeyError), RunLock(path), discard_if_unused(path):
            if path is used:
                (path / "metadata.json").write_text("{}")
            raise KeyError("boom")
    assert not unused.exists() and (used / "metadata.json").exists()


def test_a_run_kind_that_cannot_resume_is_not_told_to(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(UsageError) as caught:
        require_fresh_dir(tmp_path, resume_flag=None)
    assert "--resume" not in str(caught.value) and "choose an output directory that does not exist yet" in str(caught.value)

"""`ExecutionResult`: how one run ended, what it printed, and which protections applied.

Its own module because environments, metrics and results.jsonl read results without
running anything: `to_text` is what the model sees, `metadata` what the record keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ExecutionResult:
    """How one run ended and what it printed (head and tail when long)."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The program's exit status; 128+N when signal N killed it; None when we killed it."""
    duration_s: float
    limit: str | None = None
    """The limit it hit: timeout, output, memory, file_size, cpu, or None."""
    signal: str | None = None
    dropped_bytes: int = 0
    network: str = ""
    uid: int | None = None
    timeout_s: float = 0.0
    memory_limit: str = ""
    """"cgroup" (all processes together) or "per-process" (address space of each)."""
    user_namespaces: str = ""
    """"denied" (seccomp) or "allowed"."""
    oom_kills: int = 0
    """Processes the kernel killed at the sandbox's cgroup memory limit during the run."""

    @property
    def timed_out(self) -> bool:
        return self.limit == "timeout"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_text(self) -> str:
        """What the model sees as the tool result."""
        parts = [self.stdout.rstrip("\n")] if self.stdout else []
        if self.stderr:
            parts.append(f"[stderr]\n{self.stderr.rstrip()}")
        shared = "one memory limit for all processes together"
        if self.oom_kills and not self.signal:
            parts.append(f"[out of memory: the kernel killed {self.oom_kills} of its processes, {shared}]")
        if self.limit == "timeout":
            parts.append(f"[killed: still running after {self.timeout_s:g} s]")
        elif self.limit == "output":
            parts.append("[killed: printed too much output]")
        elif self.signal:
            why = ": CPU time limit" if self.limit == "cpu" else f": out of memory, {shared}" if self.oom_kills else ""
            parts.append(f"[killed by {self.signal}{why}]")
        elif self.exit_code:
            parts.append(f"[exit code {self.exit_code}]")
        return "\n".join(parts) or "(no output)"

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "limit": self.limit,
            "signal": self.signal,
            "duration_s": round(self.duration_s, 3),
            "dropped_bytes": self.dropped_bytes,
            "network": self.network,
            "uid": self.uid,
            "memory_limit": self.memory_limit,
            "user_namespaces": self.user_namespaces,
            "oom_kills": self.oom_kills,
        }

"""`SandboxLimits`: what one run may use, and the rlimits that enforce it in the child.

Kept apart from the `Sandbox` so that environments can configure limits (and the
isolation probe can use the defaults) without the machinery that applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    """What one `run` may use."""

    timeout_s: float = 10.0
    """Wall-clock seconds before the whole process tree is killed."""
    cpu_s: float | None = None
    """CPU seconds per process (RLIMIT_CPU); None means `timeout_s + 1`, a back-up."""
    memory_mb: int = 512
    """Memory of all the sandbox's processes together (a cgroup), or, where no cgroup can
    be used, address space per process (RLIMIT_AS); also the size of each private tmpfs."""
    file_size_mb: int = 10
    """Largest file a process may write (RLIMIT_FSIZE)."""
    processes: int = 32
    """Processes and threads of the sandbox's uid (RLIMIT_NPROC; and pids.max of its cgroup)."""
    output_bytes: int = 16_384
    """Bytes of each of stdout and stderr shown; the middle beyond that is dropped."""
    output_kill_bytes: int = 10_000_000
    """Total bytes printed after which the program is killed."""

    def rlimits(self, *, memory_per_process: bool = True) -> dict[str, tuple[int, int]]:
        """`memory_per_process=False` where a cgroup bounds memory: an address-space limit
        would then only break programs that reserve more than they touch."""
        cpu = math.ceil(self.cpu_s if self.cpu_s is not None else self.timeout_s + 1)
        limits = {
            "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second on
            "RLIMIT_AS": (self.memory_mb << 20,) * 2,
            "RLIMIT_FSIZE": (self.file_size_mb << 20,) * 2,
            "RLIMIT_NPROC": (self.processes,) * 2,
            "RLIMIT_CORE": (0, 0),
        }
        if not memory_per_process:
            del limits["RLIMIT_AS"]
        return limits

"""A seccomp filter that denies user namespaces, written as classic BPF (no library).

A user namespace gives code a root of its own and the kernel surface that comes with it;
the runner installs this filter in the child just before the code runs.
"""

from __future__ import annotations

# seccomp: (audit arch, clone, unshare) per machine; clone3 is 435 on both.
_SYSCALLS = {"x86_64": (0xC000_003E, 56, 272), "aarch64": (0xC000_00B7, 220, 97)}
_CLONE3, _CLONE_NEWUSER = 435, 0x1000_0000
_RET_ALLOW, _RET_ERRNO = 0x7FFF_0000, 0x0005_0000
_EPERM, _ENOSYS = 1, 38


def user_namespace_filter(machine: str) -> tuple[tuple[int, int, int, int], ...]:
    """A classic-BPF seccomp program (code, jt, jf, k per instruction) that fails
    `unshare` and `clone` with CLONE_NEWUSER (EPERM) and `clone3` (ENOSYS: its flags are
    out of a filter's reach, and libc then falls back to `clone`); empty for a machine
    whose syscall numbers are not known here. Other ABIs (32-bit, x32) get ENOSYS/EPERM."""
    if machine not in _SYSCALLS:
        return ()
    arch, clone, unshare = _SYSCALLS[machine]
    load, jump_eq, jump_ge, jump_set, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    return (
        (load, 0, 0, 4),  # 0: seccomp_data.arch
        (jump_eq, 1, 0, arch),  # 1: native → 3
        (ret, 0, 0, _RET_ERRNO | _ENOSYS),  # 2
        (load, 0, 0, 0),  # 3: seccomp_data.nr
        (jump_ge, 7, 0, 0x4000_0000),  # 4: x32 → 12
        (jump_eq, 7, 0, _CLONE3),  # 5: → 13
        (jump_eq, 2, 0, unshare),  # 6: → 9
        (jump_eq, 1, 0, clone),  # 7: → 9
        (ret, 0, 0, _RET_ALLOW),  # 8
        (load, 0, 0, 16),  # 9: low half of args[0], the flags of both
        (jump_set, 1, 0, _CLONE_NEWUSER),  # 10: → 12
        (ret, 0, 0, _RET_ALLOW),  # 11
        (ret, 0, 0, _RET_ERRNO | _EPERM),  # 12
        (ret, 0, 0, _RET_ERRNO | _ENOSYS),  # 13
    )

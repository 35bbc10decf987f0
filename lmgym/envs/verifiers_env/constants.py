"""What the verifiers adapter's modules share: names, limits, and how to get verifiers."""

from __future__ import annotations

from lmgym import errors

PREFIX = "vf:"
EPISODE = "vf_episode"  # the rollout's state key (and the hidden argument of every tool)
DEFAULT_MAX_TURNS = 20
INSTALL_HINT = (
    "verifiers environments need the `verifiers` package (0.4), which requires openai<3 and "
    "mcp==2.0.0 while lmgym's main venv has openai 3.x and its `mcp` extra needs mcp>=2.3, "
    "so it lives in a venv of its own: `make verifiers` builds ~/.cache/lmgym/verifiers-venv "
    "(verifiers==0.4.0 and lmgym without the mcp extra); run "
    "~/.cache/lmgym/verifiers-venv/bin/lmgym eval vf:NAME there"
)
CLOSE_TIMEOUT_S = 10.0


def import_verifiers():
    """`verifiers.v1`, or a UsageError saying how to get it (it cannot share lmgym's venv)."""
    try:
        import verifiers.v1 as vf
    except ImportError as exc:
        raise errors.UsageError(f"{INSTALL_HINT} ({exc})") from None
    return vf

"""The data flywheel: record real agent traffic, then turn it into training data.

* `lmgym.flywheel.proxy` (`lmgym proxy`) records: an authenticated OpenAI-compatible
  proxy that appends one JSON line per exchange to trace files. Its module docstring is
  the contract for the trace format.
* `lmgym.flywheel.traces` (`lmgym traces`) reads those files back into datasets.
* `lmgym.flywheel.distill` (`lmgym distill`) turns a teacher's passing rollouts into a
  student's SFT data.

Nothing is imported here eagerly, so each command loads only its own module;
`load_traces_environment` (the replay environment of `lmgym traces --to env`) is public.
"""

__all__ = ["load_traces_environment"]


def __getattr__(name: str):
    if name == "load_traces_environment":
        from lmgym.flywheel.traces import load_traces_environment

        return load_traces_environment
    raise AttributeError(f"module 'lmgym.flywheel' has no attribute {name!r}")

"""The data flywheel: record real agent traffic, then turn it into training data.

* `lmgym.flywheel.proxy` (`lmgym proxy`) records: an authenticated OpenAI-compatible
  proxy that appends one JSON line per exchange to trace files. Its module docstring is
  the contract for the trace format.
* `lmgym.flywheel.traces` (`lmgym traces`) reads those files back into datasets.
* `lmgym.flywheel.distill` (`lmgym distill`) turns a teacher's passing rollouts into a
  student's SFT data.

Nothing is imported here, so each command loads only its own module.
"""

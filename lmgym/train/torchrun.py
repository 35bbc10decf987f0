"""torchrun (`torch.distributed.run`) as `lmgym train --nproc N` starts its ranks, without
what torchrun adds to a failed run's output: a rank lmgym stops prints its own error (rank 0
one line for all ranks), and torchrun would follow it with its agent's log lines and a
traceback of its own. Here a rank that lmgym stopped leaves only the error it printed; a
rank killed from outside (out of memory, a kill) is named in one line.

    python -m lmgym.train.torchrun [torchrun's arguments]
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    """torchrun with `argv`; a failed run's exit status is `failure_status`'s."""
    os.environ.setdefault("LOGLEVEL", "CRITICAL")  # read by some torch.distributed.elastic loggers at import
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the rest inherit it
    try:
        run(parse_args(argv))
    except ChildFailedError as failed:
        return failure_status(failed.failures, failed.get_first_failure()[0])
    return 0


def failure_status(failures: dict[int, Any], first: int) -> int:
    """The run's exit status: a signal that killed the first rank to fail (named here: nothing
    else was printed about it), else rank 0's status when it exited on its own (its error is
    the one shown), else the first failed rank's."""
    if failures[first].exitcode < 0:
        print(f"training process rank {first} was killed by {failures[first].signal_name()}", file=sys.stderr)
        return 128 - failures[first].exitcode
    main = failures.get(0)
    return main.exitcode if main is not None and main.exitcode > 0 else failures[first].exitcode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

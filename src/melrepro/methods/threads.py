"""How many threads a job computes with: the number its config declares, not what the scheduler
grants.

Torch's CPU kernels split reductions (convolutions, matrix products, batch-norm statistics) by
thread count, so the same training gives other weights with 1 and with 2 threads. Snakemake
scales a rule's ``threads`` down to ``--cores`` and shares cores between jobs, so a job that took
its thread count from the grant would change its numbers with ``--cores``. A rule whose numbers
depend on threads passes the declared count instead; when fewer cores were granted the job runs
oversubscribed (slower, same numbers) and says so in its log.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

__all__ = ["job_threads"]


def job_threads(declared: int, granted: int | None = None) -> int:
    """The thread count a job computes with: ``declared`` (from the config), whatever was
    ``granted``; logs a warning when ``granted`` is smaller.

    Raises
    ------
    ValueError
        ``declared`` is not a positive integer.
    """
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        raise ValueError(f"threads must be a positive integer in the config, got {declared!r}")
    if granted is not None and granted < declared:
        logger.warning(
            "the scheduler granted %d thread(s); computing with the config's %d so that the "
            "results do not depend on --cores (the job runs oversubscribed, slower)",
            granted,
            declared,
        )
    return declared

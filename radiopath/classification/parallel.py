"""Threads and worker processes of the classification stage.

Per-case inputs are computed in parallel over cases and fits run in parallel over
folds, each in a worker process (joblib's loky) with at most ``threads`` threads for
torch, BLAS/OpenMP and SimpleITK. One thread per process is the default: on shared or
busy cores the threads of one process wait on each other at every small operation
(a ResNet-18 epoch on 96 slices took 1.5 s on one thread and 12-26 s on two on a busy
2-core node), while separate processes never wait on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import SimpleITK as sitk
import torch
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits


@contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """torch, BLAS/OpenMP and SimpleITK use at most ``threads`` threads inside the block; ``None``: unchanged."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or null, got {threads}")
    torch_threads, itk_threads = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(torch_threads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_threads)


def _call(function: Callable, threads: int | None, args: Sequence) -> object:
    with limited_threads(threads):
        return function(*args)


def run_jobs(function: Callable, arguments: Iterable[Sequence], jobs: int, threads: int | None) -> Iterator:
    """``function(*args)`` for each ``args``, in order; ``jobs`` worker processes, or this one when ``jobs`` is 1.

    Results are yielded as they come (in order), so a caller can show progress.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1:
        for args in arguments:
            yield _call(function, threads, args)
        return
    yield from Parallel(n_jobs=jobs, return_as="generator")(
        delayed(_call)(function, threads, args) for args in arguments
    )

"""Code that runs in child processes of the fault suite, forked from a warm forkserver.

Importing torch, torchvision and ganfuse takes 5-15 s on the CI machines; a forkserver that has
imported them once forks a ready child in milliseconds, so a test can start, kill and restart
training dozens of times. The children run the real ``ganfuse`` command line (``ganfuse.cli.main``)
and report their progress through shared memory, which stays readable after a SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

import sklearn.datasets  # noqa: F401  (preloaded: the digits dataset imports it)
import torch
import torchvision.utils  # noqa: F401
from tqdm import tqdm

import ganfuse.cli
import ganfuse.train.checkpoint
import ganfuse.train.diagnostics  # noqa: F401
import ganfuse.train.loop

CLONE_NEWNS = 0x00020000


def _redirect_output(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _instrument(progress, start_step, in_checkpoint) -> None:
    """Publish the trainer's step and whether a checkpoint write is under way."""
    loop = ganfuse.train.loop
    train_step, fit, save_checkpoint = (
        loop.Trainer.train_step,
        loop.Trainer.fit,
        loop.save_checkpoint,
    )

    def instrumented_step(self):
        train_step(self)
        progress.value = self.step

    def instrumented_fit(self, *args, **kwargs):
        start_step.value = self.step
        progress.value = self.step
        return fit(self, *args, **kwargs)

    def instrumented_save(*args, **kwargs):
        in_checkpoint.value = 1
        try:
            return save_checkpoint(*args, **kwargs)
        finally:
            in_checkpoint.value = 0

    loop.Trainer.train_step = instrumented_step
    loop.Trainer.fit = instrumented_fit
    loop.save_checkpoint = instrumented_save


def run_cli(
    argv: list[str],
    log_path: str,
    env: dict[str, str],
    progress=None,
    start_step=None,
    in_checkpoint=None,
    fill_after_start: str | None = None,
    leave_free: int = 0,
) -> None:
    """``ganfuse ARGV`` in this process; exits with the command's exit code.

    ``fill_after_start``: a file to grow, once training has started, until its disk has only
    ``leave_free`` bytes left (a disk that fills up while a run is going).
    """
    _redirect_output(log_path)
    os.environ.update(env)
    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock, which a kill leaks
    if progress is not None:
        _instrument(progress, start_step, in_checkpoint)
    if fill_after_start:
        fit = ganfuse.train.loop.Trainer.fit

        def fit_on_full_disk(self, *args, **kwargs):
            _fill(fill_after_start, leave_free)
            return fit(self, *args, **kwargs)

        ganfuse.train.loop.Trainer.fit = fit_on_full_disk
    sys.stdout.flush()
    code = ganfuse.cli.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fill(path: str, leave_free: int) -> None:
    with open(path, "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        try:
            while True:
                f.write(b"\1" * 65536)
        except OSError:
            pass
    os.truncate(path, max(0, os.path.getsize(path) - leave_free))


def run_cli_with_mounts(argv: list[str], log_path: str, mounts: list[list[str]], **kwargs) -> None:
    """Like :func:`run_cli`, after running ``mount`` with each argument list of ``mounts``.

    The mounts live in a mount namespace of this child only, so they vanish with it. Exit code
    97 means the machine does not allow it (no CAP_SYS_ADMIN, no ``mount``): the caller skips.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        os._exit(97)
    for args in (["--make-rprivate", "/"], *mounts):
        try:
            done = subprocess.run(["mount", *args], capture_output=True)
        except OSError:
            os._exit(97)
        if done.returncode != 0:
            os._exit(97)
    run_cli(argv, log_path, {}, **kwargs)

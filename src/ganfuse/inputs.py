"""The one check of every value a user gives: command-line options, web-app fields, and the
arguments of the Python API that take the same values (``Run.sample``).

Each function takes the value and the ``name`` the user knows it by (``--seed`` on the command
line, ``Seed`` in the web app, ``seed`` in Python) and returns it normalised, or raises an
:class:`InputError` whose message starts with that name and says what is accepted. The message
after the name is the same wherever the value comes from, so the command line and the web app
refuse the same values in the same words. Nothing here imports torch: the CLI checks its
arguments before importing any implementation (docs/architecture.md).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from numbers import Real
from pathlib import Path

from ganfuse.errors import UserError

SEED_LIMIT = 2**32  # seeds are 0 .. 2**32 - 1, which every random generator in use accepts
# Latents of all the images of one call are drawn up front (so a seed gives the same images at any
# batch size): a million 512-float latents are 2 GB. Ask for more in several calls with other seeds.
MAX_IMAGES = 1_000_000
# Features of both sides are held in memory (2048 floats an image for Inception: 800 MB each).
MAX_EVAL_IMAGES = 100_000
# Exported and packed datasets are generated in memory before they are written.
MAX_EXPORT_IMAGES = 100_000
MAX_IMAGE_SIZE = 1024
MAX_BATCH_SIZE = 4096  # images through a network at once
MIN_IMAGE_SIZE = 8
MAX_SECONDS = 24 * 3600.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class InputError(UserError):
    """A value outside what its option or field accepts; the message names the option."""


def _whole_number(name: str, value: object, accepted: str) -> int:
    """``value`` as an int when it is a whole number (an int, an integral finite float or a
    decimal string), else an :class:`InputError` saying ``accepted``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{name} is required: {accepted}")
    if isinstance(value, bool):
        raise InputError(f"{name} must be {accepted}, got {value}")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise InputError(f"{name} must be {accepted}, got {value!r}") from None
    if isinstance(value, int):
        return value
    if isinstance(value, Real) and math.isfinite(value) and float(value) == int(value):
        return int(value)
    raise InputError(f"{name} must be {accepted}, got {value}")


def _finite(name: str, value: object, accepted: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{name} is required: {accepted}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {accepted}, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise InputError(f"{name} must be {accepted}, got {number:g}")
    return number


def check_seed(value: object, name: str = "--seed") -> int:
    """A seed: a whole number from 0 to 2**32 - 1."""
    accepted = f"a whole number from 0 to {SEED_LIMIT - 1}"
    seed = _whole_number(name, value, accepted)
    if not 0 <= seed < SEED_LIMIT:
        raise InputError(f"{name} must be {accepted}, got {seed}")
    return seed


def check_truncation(value: object, name: str = "--truncation") -> float | None:
    """``None`` (no truncation) for ``None``; otherwise a finite number > 0, the bound the latents
    are clamped to (``[-t, t]``)."""
    if value is None:
        return None
    accepted = "a finite number > 0 (latents are clamped to [-t, t]; leave it out for none)"
    truncation = _finite(name, value, accepted)
    if not truncation > 0:
        raise InputError(f"{name} must be {accepted}, got {truncation:g}")
    return truncation


def check_psi(value: object, name: str = "--psi") -> float | None:
    """``None`` (no truncation) for ``None``; otherwise the truncation psi, a number from 0 to 1:
    latents are pulled towards the mean latent, ``z' = mean + psi * (z - mean)`` (0 gives the
    mean image, 1 the plain sample)."""
    if value is None:
        return None
    accepted = "a number from 0 (the mean image) to 1 (no truncation)"
    psi = _finite(name, value, accepted)
    if not 0.0 <= psi <= 1.0:
        raise InputError(f"{name} must be {accepted}, got {psi:g}")
    return psi


def check_count(name: str, value: object, limit: int, minimum: int = 1) -> int:
    """A whole number from ``minimum`` to ``limit``."""
    accepted = f"a whole number from {minimum} to {limit}"
    count = _whole_number(name, value, accepted)
    if not minimum <= count <= limit:
        raise InputError(f"{name} must be {accepted}, got {count}")
    return count


def check_image_size(value: object, name: str = "--image-size") -> int:
    """The side of square images in pixels, from 8 to 1024."""
    return check_count(name, value, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE)


def _duration(name: str, value: object, unit: str, limit: float, note: str = "") -> float:
    """A finite number of ``unit`` > 0 and at most ``limit``."""
    accepted = f"a number of {unit} > 0 and at most {limit:g}{note}"
    amount = _finite(name, value, accepted)
    if not 0 < amount <= limit:
        raise InputError(f"{name} must be {accepted}, got {amount:g}")
    return amount


def check_seconds(value: object, name: str = "--seconds", limit: float = MAX_SECONDS) -> float:
    """A duration: a finite number of seconds > 0 and at most ``limit``."""
    return _duration(name, value, "seconds", limit)


def check_minutes(value: object, name: str = "--minutes") -> float:
    """A wall-clock budget: a finite number of minutes > 0, at most a week."""
    return _duration(name, value, "minutes", MAX_SECONDS * 7 / 60, " (a week)")


def check_device(value: object, name: str = "--device") -> str:
    """A device name: auto, cpu, mps, cuda or cuda:N (whether it is present is asked when it is used)."""
    text = str(value).strip() if value is not None else ""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?", text):
        raise InputError(f"{name} must be auto, cpu, mps, cuda or cuda:N, got {value!r}")
    return text


def _unwritable(folder: Path) -> str | None:
    """Why no file can be created in the existing ``folder``, or None. Creating (and removing) a
    file is the only test that holds for every case: permissions, root on a read-only mount,
    network filesystems (``os.access`` answers yes to root on a read-only filesystem)."""
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".ganfuse-write-test-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(handle)
    os.unlink(probe)
    return None


def check_output_dir(path: str | os.PathLike, name: str = "--out") -> Path:
    """A folder that exists or can be created, and that files can be written in. Nothing is
    created: the nearest existing folder above it is what is tested."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{name} {path} is a file, not a folder; give a folder for the output")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{name} {path} cannot be created: {existing} is a file, not a folder")
    reason = _unwritable(existing)
    if reason is not None:
        where = "" if existing == path else f" (in {existing})"
        raise InputError(f"{name} {path} is not writable{where}: {reason}; choose another folder")
    return path


def check_output_file(path: str | os.PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                      name: str = "--grid", overwrite: bool = False) -> Path:
    """A file to write: its extension one of ``suffixes`` (case-insensitive), not an existing file
    unless ``overwrite``, never an existing folder, its folder writable (or creatable)."""
    path = Path(path)
    accepted = ", ".join(suffixes)
    if path.suffix.lower() not in suffixes:
        got = f"{path.suffix!r}" if path.suffix else "none"
        raise InputError(f"{name} {path} must end with one of {accepted} (the image format); got {got}")
    if path.is_dir():
        raise InputError(f"{name} {path} is a folder; give a file name ending with one of {accepted}")
    if path.exists() and not overwrite:
        raise InputError(f"{name} {path} exists; remove it, choose another name or add --overwrite")
    check_output_dir(path.parent, name=f"the folder of {name}")
    return path

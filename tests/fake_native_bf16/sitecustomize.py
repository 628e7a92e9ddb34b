"""Makes child Python processes of a ``GANFUSE_FAKE_NATIVE_BF16=1`` test run believe the CPU has
native bf16, as the test process itself does (``tests/conftest.py`` puts this folder first on
``PYTHONPATH`` only in that mode). Python imports ``sitecustomize`` at start-up, so torchrun
workers, ``python -m ganfuse`` children and forkservers resolve ``precision: auto`` to bf16 too.

The patch is applied when ``ganfuse.train.precision`` is first imported, not here: a child that
never trains must not import torch because of it (``ganfuse --help`` stays torch-free).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

PATCHED = "ganfuse.train.precision"


class _FakeNativeBf16OnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != PATCHED:
            return None
        sys.meta_path.remove(self)  # find the real module, then patch it as it is executed
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            module.cpu_has_native_bf16 = lambda: True

        spec.loader.exec_module = exec_and_patch
        return spec


if os.environ.get("GANFUSE_FAKE_NATIVE_BF16") == "1":
    sys.meta_path.insert(0, _FakeNativeBf16OnImport())

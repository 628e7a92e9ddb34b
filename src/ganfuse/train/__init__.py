"""Training: one readable loop (loop.py), the family objectives it runs (objectives.py) and the
pieces it composes.

``ganfuse.train(config, out=...)`` is the public entry point. Python binds the name
``ganfuse.train`` to this package as soon as anything imports it, so the package itself is
callable and forwards to :func:`ganfuse.train.loop.train`; the API then does not depend on
import order.
"""

from __future__ import annotations

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ganfuse.train.loop import train  # the loop imports this package first

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

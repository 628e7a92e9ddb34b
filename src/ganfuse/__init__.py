"""ganfuse: GAN image generation and multimodal image-text learning in PyTorch.

The Python API mirrors the CLI::

    import ganfuse
    cfg = ganfuse.load_config("digits", overrides=["train.steps=200"])
    run_dir = ganfuse.train(cfg, out="runs/digits")
    images = ganfuse.load_run("runs/digits").sample(16, seed=0)  # (16, C, H, W) in [-1, 1]
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_config", "train", "load_run"]


def __getattr__(name: str):
    # Imported lazily so that ``import ganfuse`` and ``ganfuse --help`` stay fast.
    if name == "load_config":
        from ganfuse.config import load_config

        return load_config
    if name == "train":  # the package, callable as the train function (see ganfuse/train/__init__.py)
        import ganfuse.train

        return ganfuse.train
    if name == "load_run":
        from ganfuse.run import load_run

        return load_run
    raise AttributeError(f"module 'ganfuse' has no attribute {name!r}")

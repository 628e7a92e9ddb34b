"""Differentiable augmentation for GANs on small data.

DiffAugment (Zhao et al. 2020) applies the same family of random, differentiable transforms to
real and generated images before the discriminator, so D cannot memorise the few real images and
G still receives gradients through the transforms. Ops on ``(B, C, H, W)`` images in [-1, 1]:

- ``translation``: shift by up to 1/8 of the side, zero padding (:func:`translate`);
- ``cutout``: zero a random square of half the side;
- ``color``: random brightness, saturation and contrast.

Each image is augmented with probability ``p``. :class:`AdaptiveAugment` tunes ``p`` with ADA's
overfitting heuristic (Karras et al. 2020): ``r_t = E[sign(D(real))]``; ``p`` rises when ``r_t``
exceeds the target and falls when it is below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)


def translate(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.125, *,
              pixels: int | None = None, padding: str = "zeros") -> torch.Tensor:
    """Each image moved by its own whole-pixel offset, uniform in ``[-s, s]`` per axis, where
    ``s`` is ``pixels`` or else ``ratio`` of the side. The gap is filled with zeros (DiffAugment's
    choice: mid-grey in [-1, 1]) or, with ``padding="border"``, by repeating the border pixels
    (a view that keeps a dark background dark)."""
    if padding not in ("zeros", "border"):
        raise ValueError(f"translate: padding must be 'zeros' or 'border', not {padding!r}")
    b, _, h, w = x.shape
    if pixels is None:
        sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    else:
        sh = sw = pixels
    dy = (_rand((b,), x, generator) * (2 * sh + 1)).floor().long() - sh
    dx = (_rand((b,), x, generator) * (2 * sw + 1)).floor().long() - sw
    padded = F.pad(x, [sw, sw, sh, sh], mode="replicate" if padding == "border" else "constant")
    rows = (torch.arange(h, device=x.device)[None, :] - dy[:, None] + sh)  # (B, H) into padded
    cols = (torch.arange(w, device=x.device)[None, :] - dx[:, None] + sw)  # (B, W)
    # rows, then columns: two gathers (and two scatter-adds backward) run 1.8x faster on a CPU
    # than one advanced index over both (5.0 -> 2.8 ms forward + backward, 64 x 3 x 64 x 64)
    c = x.shape[1]
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * sw))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (_rand((b,), x, generator) * (h + 1 - ch % 2)).floor().long()
    cx = (_rand((b,), x, generator) * (w + 1 - cw % 2)).floor().long()
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = ((ys - cy[:, None] + ch // 2) >= 0) & ((ys - cy[:, None] + ch // 2) < ch)  # (B, H)
    in_x = ((xs - cx[:, None] + cw // 2) >= 0) & ((xs - cx[:, None] + cw // 2) < cw)  # (B, W)
    mask = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * mask[:, None].to(x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), x, generator) - 0.5)  # brightness
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand((b, 1, 1, 1), x, generator) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((b, 1, 1, 1), x, generator) + 0.5) + mean  # contrast


OPS = {"translation": translate, "cutout": cutout, "color": color}


def diff_augment(x: torch.Tensor, ops: list[str], p: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``ops`` in order, each to a random subset of the batch chosen with probability ``p``."""
    for name in ops:
        if p <= 0:
            break
        augmented = OPS[name](x, generator)
        if p >= 1:
            x = augmented
        else:
            keep = _rand((x.shape[0], 1, 1, 1), x, generator) < p
            x = torch.where(keep, augmented, x)
    return x


class AdaptiveAugment:
    """Augmentation probability ``p``, adapted from D's sign on real images when ``target`` is set.

    ``accumulate(real_logits)`` is called every D step (cheap, stays on device);
    ``update(batch_size)`` every ``interval`` steps moves ``p`` by
    ``sign(r_t - target) * batch_size * interval / (kimg * 1000)``.
    """

    def __init__(self, ops: list[str], p: float = 1.0, target: float | None = None,
                 interval: int = 4, kimg: float = 5.0):
        self.ops, self.p, self.target, self.interval, self.kimg = list(ops), float(p), target, interval, kimg
        if target is not None:
            self.p = 0.0  # ADA starts without augmentation and raises p when D overfits
        self._sign_sum = torch.zeros(())
        self._count = 0
        self.last_rt = float("nan")

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return diff_augment(x, self.ops, self.p, generator) if self.ops else x

    def accumulate(self, real_logits: torch.Tensor) -> None:
        if self.target is None:
            return
        if self._sign_sum.device != real_logits.device:
            self._sign_sum = self._sign_sum.to(real_logits.device)
        self._sign_sum = self._sign_sum + real_logits.detach().float().sign().sum()
        self._count += real_logits.shape[0]

    def update(self, step: int, batch_size: int) -> None:
        if self.target is None or step % self.interval != 0 or self._count == 0:
            return
        rt = float(self._sign_sum) / self._count
        self.last_rt = rt
        adjust = (1.0 if rt > self.target else -1.0) * batch_size * self.interval / (self.kimg * 1000)
        self.p = min(1.0, max(0.0, self.p + adjust))
        self._sign_sum.zero_()
        self._count = 0

    def state_dict(self) -> dict:
        return {"p": torch.tensor(self.p, dtype=torch.float64), "sign_sum": self._sign_sum.detach().cpu().double(),
                "count": torch.tensor(self._count), "last_rt": torch.tensor(self.last_rt, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self._sign_sum = state["sign_sum"].float()
        self._count = int(state["count"])
        self.last_rt = float(state["last_rt"])

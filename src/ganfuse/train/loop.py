"""The GAN training loop, readable top to bottom.

One step = ``n_critic`` discriminator updates, then one generator update, then the EMA update:

    Dmain  D minimises its loss on augmented real and (detached) fake images
    Dreg   every ``r1_every`` steps, lazy R1 on real images (scaled by the interval); WGAN-GP
    Gmain  G minimises its loss on D's verdict of fresh fakes

Everything random draws from explicit generators whose states go into checkpoints, and the data
order is a pure function of (seed, epoch, position), so ``--resume`` continues a run exactly.
Per-step statistics accumulate on the device and are read once per log interval, so the step has
no host-device synchronisation on GPUs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.utils import save_image
from tqdm import tqdm

from ganfuse.config import Config, load_config, save_config, validate
from ganfuse.data import InMemoryImageDataset, build_dataset
from ganfuse.data.sampler import EpochBatchSampler
from ganfuse.errors import ConfigError, UserError
from ganfuse.models.build import build_gan
from ganfuse.train.augment import AdaptiveAugment
from ganfuse.train.checkpoint import atomic_write_text, latest_good_checkpoint, save_checkpoint
from ganfuse.train.ema import EMA
from ganfuse.train.guard import NaNGuard
from ganfuse.train.losses import LOSS_FUNCTIONS, gradient_penalty, r1_penalty
from ganfuse.train.precision import Precision, resolve_device, resolve_precision

log = logging.getLogger("ganfuse")

STAT_NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "acc_real", "acc_fake", "grad_norm_d", "grad_norm_g",
              "r1", "gp", "nonfinite")


def grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """Global L2 norm of the gradients, as a 0-dim tensor on the parameters' device."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def fixed_latents(z_dim: int, num: int, seed: int, device: torch.device) -> torch.Tensor:
    """The same latent vectors for every sample grid of a run, so grids show progress, not noise."""
    return torch.randn(num, z_dim, generator=torch.Generator().manual_seed(seed + 7919)).to(device)


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Create ``run_dir`` and check it is writable before any work; refuse to overwrite a run."""
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step_*"))
    if has_checkpoints and not resume:
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not has_checkpoints:
        raise UserError(f"--resume: no checkpoint in {run_dir / 'checkpoints'} to resume from")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test_{os.getpid()}"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None


class Trainer:
    """Builds data, models, optimisers and state from a config; ``fit()`` trains and checkpoints."""

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config = validate(config)
        self.run_dir = Path(run_dir)
        self.progress = progress
        t, m = config.train, config.model
        prepare_run_dir(self.run_dir, resume)

        torch.manual_seed(t.seed)
        self.device = resolve_device(t.device)
        self.precision = Precision(resolve_precision(t.precision, self.device), self.device)

        self.dataset = build_dataset(config.data, progress=progress)
        if m.conditional and self.dataset.num_classes == 0:
            raise ConfigError("model.conditional needs a labelled dataset; this one has no classes")
        self.num_classes = self.dataset.num_classes if m.conditional else 0
        self.channels = self.dataset.channels
        self.sampler = EpochBatchSampler(len(self.dataset), t.batch_size, t.seed)
        self.batch_size = self.sampler.batch_size

        self.G, self.D = build_gan(config, self.channels, self.dataset.num_classes)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.G.to(self.device, memory_format=self.memory_format)
        self.D.to(self.device, memory_format=self.memory_format)
        fused = self.device.type == "cuda"
        adam = dict(betas=(t.beta1, t.beta2), foreach=None if fused else True, fused=fused or None)
        # Lazy R1 (Karras et al. 2020): the penalty is applied every k steps and scaled by k; Adam's
        # betas and lr are adjusted by c = k / (k + 1) so the effective regularisation matches.
        c = t.r1_every / (t.r1_every + 1) if t.r1_gamma > 0 else 1.0
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d * c,
                                      **{**adam, "betas": (t.beta1**c, t.beta2**c)})
        self.scaler_g = self.precision.grad_scaler()
        self.scaler_d = self.precision.grad_scaler()
        self.ema = EMA(self.G, t.ema_decay, t.ema_warmup_steps) if t.ema_decay > 0 else None
        self.augment = AdaptiveAugment(t.augment, t.augment_p, t.ada_target, t.ada_interval, t.ada_kimg)
        self.d_loss_fn, self.g_loss_fn = LOSS_FUNCTIONS[t.loss]
        self.G_run = torch.compile(self.G) if t.compile else self.G
        self.D_run = torch.compile(self.D) if t.compile else self.D

        self.noise_gen = torch.Generator(self.device).manual_seed(t.seed + 1)
        self.aug_gen = torch.Generator(self.device).manual_seed(t.seed + 2)
        self.step = 0
        self.images_seen = 0
        self.best_fd = math.inf
        self._stats = torch.zeros(len(STAT_NAMES), device=self.device)
        self._stat_counts = torch.zeros(len(STAT_NAMES), device=self.device)
        self.guard = NaNGuard(self._memory_state, self._load_memory_state, [self.opt_g, self.opt_d]) if t.guard else None
        self.callbacks: list = []  # fn(trainer, step) called at each log step (diagnostics, evaluation)

        if resume:
            self._resume()
        save_config(self.config, self.run_dir / "config.yaml")
        self.fixed_z = fixed_latents(m.z_dim, 64, t.seed, self.device)
        self.fixed_y = (torch.arange(64, device=self.device) % self.num_classes) if self.num_classes else None

    # ------------------------------------------------------------------ one training step

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.model.z_dim, device=self.device, generator=self.noise_gen)

    def _fake_labels(self, n: int) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.device, generator=self.noise_gen)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        indices = self.sampler.next_indices()
        if isinstance(self.dataset, InMemoryImageDataset):
            images, labels = self.dataset.batch(indices)
        else:
            items = [self.dataset[int(i)] for i in indices]
            images = torch.stack([it[0] for it in items])
            labels = torch.tensor([it[1] for it in items])
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        labels = labels.to(self.device) if self.num_classes else None
        return images, labels

    def _record(self, name: str, value: torch.Tensor) -> None:
        i = STAT_NAMES.index(name)
        self._stats[i] += value.detach().float()
        self._stat_counts[i] += 1

    def _backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler, params) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            norm = grad_norm(params)
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            norm = grad_norm(params)
            scaler.step(opt)
            scaler.update()
        return norm

    def generate(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fresh fakes ``(n, C, H, W)`` float32 with their labels; keeps the graph when grad is enabled."""
        labels = self._fake_labels(n)
        with self.precision.autocast():
            fake = self.G_run(self._noise(n), labels)
        return fake.float(), labels

    def d_step(self, real: torch.Tensor, labels: torch.Tensor | None, fake: torch.Tensor,
               fake_labels: torch.Tensor | None, regularise: bool) -> None:
        """Dmain (+ Dreg): one discriminator update on a real batch and detached fakes."""
        t = self.config.train
        r1_active = regularise and t.r1_gamma > 0
        real_in = self.augment(real, self.aug_gen).detach().requires_grad_(r1_active)
        fake_in = self.augment(fake.detach(), self.aug_gen)
        with self.precision.autocast():
            real_logits = self.D_run(real_in, labels).float()
            fake_logits = self.D_run(fake_in, fake_labels).float()
        loss = self.d_loss_fn(real_logits, fake_logits)
        if r1_active:
            r1 = r1_penalty(real_logits, real_in)
            loss = loss + (t.r1_gamma / 2) * r1 * t.r1_every
            self._record("r1", r1)
        if t.loss == "wgan-gp":
            # interpolates between a real and a fake image take the real image's label
            gp = gradient_penalty(lambda x: self.D_run(x, labels), real_in.detach(), fake_in, self.aug_gen)
            loss = loss + t.gp_weight * gp
            self._record("gp", gp)
        norm = self._backward_step(loss, self.opt_d, self.scaler_d, list(self.D.parameters()))
        self.augment.accumulate(real_logits)
        self._record("loss_d", loss)
        self._record("d_real", real_logits.mean())
        self._record("d_fake", fake_logits.mean())
        self._record("acc_real", (real_logits > 0).float().mean())
        self._record("acc_fake", (fake_logits < 0).float().mean())
        self._record("grad_norm_d", norm)
        self._record("nonfinite", (~torch.isfinite(loss)).float())

    def g_step(self, fake: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Gmain: one generator update through D's verdict on ``fake`` (which carries G's graph)."""
        fake_in = self.augment(fake, self.aug_gen)
        with self.precision.autocast():
            logits = self.D_run(fake_in, labels).float()
        loss = self.g_loss_fn(logits)
        norm = self._backward_step(loss, self.opt_g, self.scaler_g, list(self.G.parameters()))
        self._record("loss_g", loss)
        self._record("grad_norm_g", norm)
        self._record("nonfinite", (~torch.isfinite(loss)).float())

    def train_step(self) -> None:
        t = self.config.train
        self.G.train()
        self.D.train()
        for i in range(t.n_critic):
            real, labels = self._next_batch()
            last = i == t.n_critic - 1
            # The last critic step's fakes are reused by the generator step (as the PyTorch DCGAN
            # example does), so they keep G's graph; earlier ones need none.
            with torch.set_grad_enabled(last):
                fake, fake_labels = self.generate(real.shape[0])
            self.d_step(real, labels, fake, fake_labels, regularise=(self.step % t.r1_every == 0) and i == 0)
            self.images_seen += real.shape[0]
        self.D.requires_grad_(False)
        self.g_step(fake, fake_labels)
        self.D.requires_grad_(True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.G, self.step)
        self.augment.update(self.step, self.batch_size)

    # ------------------------------------------------------------------ state

    @property
    def sampling_generator(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.G

    def weights(self) -> dict[str, torch.Tensor]:
        out = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        out.update({f"D.{k}": v for k, v in self.D.state_dict().items()})
        if self.ema is not None:
            out.update({f"G_ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        return out

    def training_state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "images_seen": self.images_seen,
            "best_fd": self.best_fd,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sampler": self.sampler.state_dict(),
            "augment": self.augment.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "noise": self.noise_gen.get_state(),
                "aug": self.aug_gen.get_state(),
            },
        }
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None:
                state[name] = scaler.state_dict()
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_training_state(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}

        self.G.load_state_dict(part("G."))
        self.D.load_state_dict(part("D."))
        if self.ema is not None:
            ema_weights = part("G_ema.")
            self.ema.model.load_state_dict(ema_weights or part("G."))
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sampler.load_state_dict(state["sampler"])
        self.augment.load_state_dict(state["augment"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.best_fd = float(state.get("best_fd", math.inf))
        torch.set_rng_state(state["rng"]["torch"])
        self.noise_gen.set_state(state["rng"]["noise"])
        self.aug_gen.set_state(state["rng"]["aug"])
        if "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None and name in state:
                scaler.load_state_dict(state[name])

    def _memory_state(self) -> dict[str, Any]:
        return {"weights": {k: v.clone() for k, v in self.weights().items()}, "state": self.training_state()}

    def _load_memory_state(self, snapshot: dict[str, Any]) -> None:
        # keep the data order and RNG moving forward: the batches that produced NaN are skipped
        sampler, rng = self.sampler.state_dict(), self.training_state()["rng"]
        self.load_training_state(snapshot["weights"], snapshot["state"])
        self.sampler.load_state_dict(sampler)
        self.noise_gen.set_state(rng["noise"])
        self.aug_gen.set_state(rng["aug"])

    def _resume(self) -> None:
        path, manifest, weights, state = latest_good_checkpoint(self.run_dir)
        saved = manifest.get("config", {})
        for section in ("data", "model"):
            if saved.get(section) and saved[section] != self.config.to_dict()[section]:
                raise ConfigError(
                    f"--resume: the {section} config differs from the checkpoint's; resume with the run's own "
                    f"config ({self.run_dir / 'config.yaml'})")
        self.load_training_state({k: v.to(self.device) for k, v in weights.items()}, state)
        self._truncate_metrics(self.step)
        log.info("resumed from %s (step %d)", path.name, self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines written after the checkpoint we resume from, so the log has no duplicates."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a line cut by a kill
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))

    def save(self, best: bool = False) -> Path:
        """Write a checkpoint of the current step (into ``best/`` instead when ``best``)."""
        meta = {"config": self.config.to_dict(), "precision": self.precision.name,
                "channels": self.channels, "num_classes": self.num_classes,
                "class_names": list(self.dataset.class_names) if self.num_classes else [],
                "best_fd": None if math.isinf(self.best_fd) else self.best_fd}
        keep, folder = (1, "best") if best else (self.config.train.keep_checkpoints, "checkpoints")
        return save_checkpoint(self.run_dir, self.step, self.weights(), self.training_state(), meta,
                               keep=keep, folder=folder)

    # ------------------------------------------------------------------ outputs

    @torch.no_grad()
    def save_grid(self) -> Path:
        g = self.sampling_generator
        was_training = g.training
        g.eval()
        with self.precision.autocast():
            images = g(self.fixed_z, self.fixed_y).float()
        g.train(was_training)
        path = self.run_dir / "samples" / f"step_{self.step:08d}.png"
        path.parent.mkdir(exist_ok=True)
        save_image(images.cpu(), path, nrow=8, normalize=True, value_range=(-1, 1))
        return path

    def _flush_stats(self) -> dict[str, float]:
        values = (self._stats / self._stat_counts.clamp(min=1)).tolist()
        counts = self._stat_counts.tolist()
        self._stats.zero_()
        self._stat_counts.zero_()
        return {name: v for name, v, c in zip(STAT_NAMES, values, counts, strict=True) if c > 0}

    def _write_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ the loop

    def fit(self, steps: int | None = None, max_minutes: float | None = None) -> Path:
        """Train until ``steps`` (total, counting resumed ones) or ``max_minutes`` of wall clock."""
        t = self.config.train
        steps = steps if steps is not None else t.steps
        max_minutes = max_minutes if max_minutes is not None else t.max_minutes
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else math.inf
        log.info("training %s on %s: device=%s precision=%s batch=%d steps=%d%s", self.config.model.arch,
                 self.dataset.name, self.device, self.precision.name, self.batch_size, steps,
                 f" max_minutes={max_minutes:g}" if max_minutes else "")
        if self.guard is not None:
            self.guard.take_snapshot()
        bar = tqdm(total=steps, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True)
        interval_start, interval_images = time.perf_counter(), self.images_seen
        run_start = time.monotonic()
        last_saved = self.step if self.step > 0 else -1
        try:
            while self.step < steps and time.monotonic() < deadline:
                self.train_step()
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == steps:
                    stats = self._flush_stats()
                    finite = stats.get("nonfinite", 0.0) == 0.0 and all(math.isfinite(v) for v in stats.values())
                    if self.guard is not None and not self.guard.check(finite, self.step):
                        bar.n = self.step
                        bar.refresh()
                        continue
                    now = time.perf_counter()
                    img_s = (self.images_seen - interval_images) / max(now - interval_start, 1e-9)
                    interval_start, interval_images = now, self.images_seen
                    record = {"step": self.step, "time": round(time.monotonic() - run_start, 3),
                              "images": self.images_seen, "img_per_s": round(img_s, 1), **stats}
                    if self.augment.enabled:
                        record["augment_p"] = self.augment.p
                        if self.augment.target is not None:
                            record["ada_rt"] = self.augment.last_rt
                    for callback in self.callbacks:
                        record.update(callback(self) or {})
                    record.pop("nonfinite", None)
                    self._write_metrics(record)
                    bar.set_postfix(d=f"{stats.get('loss_d', 0):.3f}", g=f"{stats.get('loss_g', 0):.3f}",
                                    img_s=f"{img_s:.0f}", refresh=False)
                if self.step % t.sample_every == 0:
                    self.save_grid()
                if self.step % t.checkpoint_every == 0:
                    self.save()
                    last_saved = self.step
        finally:
            bar.close()
        if last_saved != self.step:
            self.save()
        self.save_grid()
        return self.run_dir


def train(config: Config | str, out: str | Path, resume: bool = False, progress: bool = True,
          steps: int | None = None, max_minutes: float | None = None) -> Path:
    """Train a GAN from a config (or preset name) into ``out``; returns the run directory."""
    if isinstance(config, str):
        config = load_config(config)
    trainer = Trainer(config, out, resume=resume, progress=progress)
    from ganfuse.train.diagnostics import attach_default_callbacks

    attach_default_callbacks(trainer)
    return trainer.fit(steps=steps, max_minutes=max_minutes)

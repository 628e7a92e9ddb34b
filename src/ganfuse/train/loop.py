"""The training loop of every GAN family, readable top to bottom.

What a family means (its data and conditioning, networks, phases and losses) is its objective
(:mod:`ganfuse.train.objectives`); the loop owns the rest. One step = ``n_critic`` rounds of the
discriminator phases (``Dmain``, and ``Dreg`` every its interval, in the first round), each on a
fresh batch, then the generator phases on the last round's fakes, then the EMA update. Each phase
is its own backward pass and optimiser step; the statistics the objective reports are reduced
across ranks once per log interval.

Everything random draws from explicit generators whose states go into checkpoints, and the data
order is a pure function of (seed, epoch, position), so ``--resume`` continues a run exactly.
Per-step statistics accumulate on the device and are read once per log interval, so the step has
no host-device synchronisation on GPUs.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.utils import save_image
from tqdm import tqdm

from ganfuse.config import Config, arch_family, load_config, save_config, validate
from ganfuse.data import InMemoryImageDataset
from ganfuse.data.sampler import ClassBalancedBatchSampler, EpochBatchSampler, class_balance_weights
from ganfuse.errors import CheckpointError, ConfigError, UserError
from ganfuse.logging_backends import make_loggers
from ganfuse.train import bf16conv, distributed
from ganfuse.train.augment import AdaptiveAugment
from ganfuse.train.checkpoint import (
    atomic_write_text,
    check_free_space,
    checkpoint_dirs,
    estimate_checkpoint_bytes,
    latest_good_checkpoint,
    prepare_run_folder,
    recover_interrupted_writes,
    save_checkpoint,
    set_aside_newer_checkpoints,
)
from ganfuse.train.diagnostics import AttributeMonitor, SceneMonitor, attach_default_callbacks
from ganfuse.train.distributed import DistributedContext
from ganfuse.train.ema import EMA, recalibrate_batchnorm
from ganfuse.train.finetune import freeze_lower_blocks, init_from_source
from ganfuse.train.guard import NaNGuard
from ganfuse.train.objectives import Batch, Nets, Phase, make_objective
from ganfuse.train.precision import (
    OwnStep,
    Precision,
    cached_bf16_probe,
    measures_own_step,
    precision_reason,
    resolve_device,
    resolve_precision,
    resume_precision,
    step_signature,
)
from ganfuse.train.privacy import check_dp_config, setup_private_discriminator
from ganfuse.train.stats import StatsReporter

log = logging.getLogger("ganfuse")

EMA_BN_BATCHES = 16  # batches that recompute the EMA generator's BatchNorm statistics


def grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """Global L2 norm of the gradients, as a 0-dim tensor on the parameters' device."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def fixed_latents(z_dim: int, num: int, seed: int, device: torch.device) -> torch.Tensor:
    """The same latent vectors for every sample grid of a run, so grids show progress, not noise."""
    return torch.randn(num, z_dim, generator=torch.Generator().manual_seed(seed + 7919)).to(device)


def batch_sampler(dataset, batch_size: int, seed: int, class_balance: float) -> EpochBatchSampler | None:
    """The batch order of a dataset held in memory (None for a streaming one): each image once per
    epoch, or with ``data.class_balance`` > 0 weighted by its class's size."""
    if not hasattr(dataset, "__len__"):
        if class_balance > 0:
            raise ConfigError("data.class_balance needs a dataset held in memory (this one streams); set it to 0")
        return None
    if class_balance == 0:
        return EpochBatchSampler(len(dataset), batch_size, seed)
    if getattr(dataset, "num_classes", 0) < 2 or not isinstance(dataset, InMemoryImageDataset):
        raise ConfigError("data.class_balance needs a labelled dataset with at least two classes; set it to 0")
    return ClassBalancedBatchSampler(class_balance_weights(dataset.labels, class_balance), batch_size, seed)


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Check ``run_dir`` before any work (:func:`~ganfuse.train.checkpoint.prepare_run_folder`:
    a run of any kind there needs ``--resume`` of a GAN run, and it must be writable), create it,
    and clean up what a killed writer left."""
    prepare_run_folder(run_dir, "gan", resume=resume, resumable=True)
    has_checkpoints = bool(checkpoint_dirs(run_dir))
    if resume and not has_checkpoints:
        # A run killed before its first checkpoint (even before creating its folder): the same
        # command with --resume starts it over, so a supervisor can always restart with --resume.
        log.warning("--resume: no checkpoint in %s yet; starting from step 0", run_dir)
    try:
        recover_interrupted_writes(run_dir)
        if not has_checkpoints:  # log lines of a run that died before its first checkpoint
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None


class Trainer:
    """Builds the objective (data, conditioning, networks), optimisers and state from a config;
    ``fit()`` trains and checkpoints. The trainer works on its own copy of ``config``: the copy
    records what the run resolved (the precision, a text encoder's width and words) and is saved
    as the run's ``config.yaml``."""

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config = validate(copy.deepcopy(config))
        self.run_dir = Path(run_dir)
        t, m = self.config.train, self.config.model
        self.dist = DistributedContext.from_env()
        if t.dp:  # DP hook: refuse what DP training cannot honour before any work
            check_dp_config(self.config, distributed=self.dist.enabled)
        self.progress = progress and self.dist.is_main
        if self.dist.is_main:
            prepare_run_dir(self.run_dir, resume)
        resume = resume and bool(checkpoint_dirs(self.run_dir))

        torch.manual_seed(t.seed)
        self.device = self.dist.device_for(resolve_device(t.device))
        self.dist.init(self.device)
        self.saved = latest_good_checkpoint(self.run_dir) if resume else None
        recorded = self.saved[1].get("config", {}).get("train", {}).get("precision") if resume else None
        asked = t.precision
        # auto on a CPU with native bf16 times this run's own step, once it is built (fp32 until then)
        own_step = not recorded and measures_own_step(asked, self.device)
        t.precision = resume_precision(t.precision, recorded, self.device) if recorded \
            else "fp32" if own_step else resolve_precision(t.precision, self.device)
        self.precision = Precision(t.precision, self.device)
        self.precision_reason = f"resumed: the run recorded {recorded}" if recorded \
            else "auto: to be measured" if own_step else precision_reason(asked, t.precision, self.device)

        self.objective = make_objective(self.config, self.device, progress=self.progress)
        self.dataset = self.objective.dataset
        self.num_classes = self.objective.num_classes
        self.channels = self.dataset.channels
        self.batch_size = min(t.batch_size, len(self.dataset)) if hasattr(self.dataset, "__len__") else t.batch_size
        self.local_batch_size = self.dist.local_batch(self.batch_size)
        self.sampler = batch_sampler(self.dataset, self.batch_size, t.seed, self.config.data.class_balance)
        self._stream = None  # iterator over a streaming (iterable) dataset

        self.G, self.D = self.objective.build_models(self.channels)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.G.to(self.device, memory_format=self.memory_format)
        self.D.to(self.device, memory_format=self.memory_format)
        if t.bf16_conv_grad and self.device.type == "cpu" and not t.compile and not t.dp:
            # inert outside CPU bf16 autocast, so installed before auto picks the precision
            bf16conv.install(self.G)
            bf16conv.install(self.D)
        # The EMA copy is taken before any SyncBatchNorm conversion: only rank 0 samples from it
        # (and recalibrates its BatchNorm statistics), which must not wait on the other ranks.
        self.ema = EMA(self.G, t.ema_decay, t.ema_warmup_steps) if t.ema_decay > 0 else None
        self._ema_calibrated_step = -1
        if t.init_from and not resume:  # a fine-tune starts from another run's G, D and EMA
            init_from_source(self)
        self.frozen_d = freeze_lower_blocks(self.D, t.freeze_d)  # FreezeD: not trained, not in D's optimiser
        if t.sync_bn and self.dist.enabled and self.device.type == "cuda":
            self.G = nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        # the trained parameters (for grad norms and optimisers): D without its frozen blocks
        self.params = {"G": list(self.G.parameters()), "D": [p for p in self.D.parameters() if p.requires_grad]}
        self.phases: list[Phase] = self.objective.phases()
        self.opt_g, self.opt_d = self._optimizers()
        self.optimizers = {"G": self.opt_g, "D": self.opt_d}
        self.scalers = {"G": self.precision.grad_scaler(), "D": self.precision.grad_scaler()}
        self.augment = AdaptiveAugment(t.augment, t.augment_p, t.ada_target, t.ada_interval, t.ada_kimg)
        # G_train/D_train: the modules the training step calls (DDP-wrapped and/or compiled);
        # D_frozen: D as seen by the generator step, which needs no gradient synchronisation for D.
        self.G_train = distributed.wrap(self.G, self.dist, self.device)
        self.D_train = distributed.wrap(self.D, self.dist, self.device)
        self.D_frozen = self.D
        if t.compile:
            self.G_train, self.D_train = torch.compile(self.G_train), torch.compile(self.D_train)
            self.D_frozen = torch.compile(self.D)
        # ---- DP hook (train.dp, ganfuse.train.privacy): D's Dmain updates become DP-SGD through
        # Opacus, real batches are Poisson-sampled; G and D_frozen stay as they are. None without DP.
        self.private_d = setup_private_discriminator(self)
        if self.private_d is not None:
            self.D_train = self.private_d.module
        # ---- end DP hook

        self.noise_gen = torch.Generator(self.device).manual_seed(t.seed + 1)
        self.aug_gen = torch.Generator(self.device)
        self.step = 0
        self.images_seen = 0
        self.best_fd = math.inf
        self.data_seconds = 0.0
        # Training seconds of earlier starts of the run (restored on resume, so metrics.jsonl's
        # ``time`` goes on), and the clock origin of the current fit() (None outside fit).
        self._seconds_before = 0.0
        self._run_start: float | None = None
        self.stats = StatsReporter(self.device)
        self.nets = Nets(self.D_train, self.D_frozen, self.augment, self.aug_gen, self.noise_gen, self.precision.autocast,
                         self.stats.report)
        self.guard = NaNGuard(self._memory_state, self._load_memory_state, [self.opt_g, self.opt_d]) if t.guard else None
        self.callbacks: list = []  # fn(trainer) -> dict, called on rank 0 at each log step
        self.precision_probe = None  # what auto measured on the run's own step, if it did
        if own_step:
            self._resolve_auto_on_own_step()

        if self.dist.is_main:
            check_free_space(self.run_dir, estimate_checkpoint_bytes(self.weights(calibrated=False)),
                             t.keep_checkpoints)
        if resume:
            self._resume()
        self.saved = None  # the checkpoint read for resuming is not kept in memory
        self.logger = None  # metrics.jsonl (+ TensorBoard), opened on rank 0 when fit() starts
        if self.dist.is_main:
            save_config(self.config, self.run_dir / "config.yaml")
        self.fixed_z = fixed_latents(m.z_dim, 64, t.seed, self.device)
        self.fixed_y = self.objective.sample_conditions(64)

    def _resolve_auto_on_own_step(self) -> None:
        """``precision=auto`` on a CPU with native bf16: time this run's training steps in fp32 and
        bf16 (:func:`~ganfuse.train.precision.measure_own_step`, or a cached verdict), then put
        back every bit of state the steps moved (weights, optimisers, data order, random streams,
        augmentation, statistics), so the run trains exactly as if it had not measured.
        Differentially private runs time the proxy block instead: their step spends privacy."""
        t = self.config.train
        if self.private_d is not None:
            t.precision = self.precision.name = resolve_precision("auto", self.device)
            self.precision_reason = precision_reason("auto", t.precision, self.device)
            return
        signature = step_signature(self.config.to_dict(), repr(self.G), repr(self.D),
                                   f"batch {self.local_batch_size}", str(self.memory_format),
                                   f"world {self.dist.world_size}")
        snapshot, data_seconds, moved = self._memory_state(), self.data_seconds, []
        weights, state = snapshot["weights"], copy.deepcopy(snapshot["state"])

        def run(bf16: bool) -> None:
            moved.append(bf16)
            self.precision.name = "bf16" if bf16 else "fp32"
            self.train_step()

        try:
            chosen = resolve_precision("auto", self.device, OwnStep(
                run, self.local_batch_size * t.n_critic * self.dist.world_size, signature))
        finally:
            self.precision.name = "fp32"
            if moved:
                self.load_training_state(weights, state)
                self.stats.load_state_dict(state["stats"])
                self.data_seconds, self._stream = data_seconds, None  # a stream starts from its head
        t.precision = self.precision.name = chosen
        self.precision_probe = cached_bf16_probe(signature=signature)
        self.precision_reason = precision_reason("auto", chosen, self.device, signature)

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam for G and D. A lazy regularisation phase of interval k makes D take k + 1 steps per
        k batches, so D's lr and betas are corrected by c = k / (k + 1) (Karras et al. 2020)."""
        t = self.config.train
        fused = self.device.type == "cuda"
        adam = dict(betas=(t.beta1, t.beta2), foreach=None if fused else True, fused=fused or None)
        opts = []
        for module, lr in (("G", t.lr_g), ("D", t.lr_d)):
            k = next((p.interval for p in self.phases if p.module == module and p.regularises), None)
            c = k / (k + 1) if k else 1.0
            groups: list[dict] = [{"params": self.params[module]}]
            if module == "G" and t.lr_outline > 0:  # t2i-words: its outline decoder at its own rate
                outline = {id(p) for p in self.G.outline_parameters()}
                groups = [{"params": [p for p in self.params[module] if id(p) not in outline]},
                          {"params": [p for p in self.params[module] if id(p) in outline], "lr": t.lr_outline * c}]
            opts.append(torch.optim.Adam(groups, lr=lr * c, **{**adam, "betas": (t.beta1**c, t.beta2**c)}))
        return opts[0], opts[1]

    # ------------------------------------------------------------------ one training step

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.model.z_dim, device=self.device, generator=self.noise_gen)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """This rank's slice of the next global batch: images ``(b, C, H, W)``, their conditions and
        their dataset labels (for captioned data, dataset indices)."""
        start = time.perf_counter()
        if self.sampler is None:
            images, labels = self._next_streamed()
        else:
            indices = self.dist.local_slice(self.sampler.next_indices())
            if isinstance(self.dataset, InMemoryImageDataset):
                images, labels = self.dataset.batch(indices)
            else:
                items = [self.dataset[int(i)] for i in indices]
                images = torch.stack([it[0] for it in items])
                labels = torch.tensor([it[1] for it in items])
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        conditions = self.objective.real_conditions(labels)
        if self.config.train.profile:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.data_seconds += time.perf_counter() - start
        return images, conditions, labels

    def _next_streamed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of a streaming dataset, read by DataLoader workers."""
        if self._stream is None:
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=self.local_batch_size, drop_last=True,
                num_workers=self.config.data.num_workers, pin_memory=self.device.type == "cuda",
                persistent_workers=self.config.data.num_workers > 0)
            self._stream = iter(loader)
        try:
            return next(self._stream)[:2]
        except StopIteration:
            self._stream = None
            return self._next_streamed()

    def _draw(self, keep_graph: bool) -> Batch:
        """A real batch and as many fresh fakes; the fakes keep G's graph when ``keep_graph``."""
        real, cond, index = self._next_batch()
        n = real.shape[0] * self.dist.world_size  # noise and conditions are drawn for the global batch
        if self.private_d is not None:  # DP hook: Poisson real batches vary in size, the fakes do not
            n = self.batch_size
        z = self.dist.local_slice(self._noise(n))
        fake_cond = self.objective.fake_conditions(n, cond, self.dist.world_size, self.noise_gen)
        fake_cond = None if fake_cond is None else self.dist.local_slice(fake_cond)
        with torch.set_grad_enabled(keep_graph), self.precision.autocast():
            fake = self.G_train(z, fake_cond)
        centres = getattr(self.G, "last_centres", None)  # an object-slot G's layout of these fakes
        slots = getattr(self.G, "last_slots", None)  # with G's graph where it is kept
        relations = getattr(self.G, "last_relations", None)
        spread = getattr(self.G, "last_spread", None)
        return Batch(real, cond, fake.float(), fake_cond, index, centres, slots, fake_relations=relations,
                     fake_spread=spread)

    def _run_phase(self, phase: Phase, batch: Batch) -> None:
        """One optimiser step of ``phase``'s network on the objective's loss."""
        loss = self.objective.loss(phase.name, batch, self.nets)
        opt, scaler = self.optimizers[phase.module], self.scalers[phase.module]
        params = self.params[phase.module]
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
        if not phase.regularises:
            self.stats.report(f"grad_norm_{phase.module.lower()}", norm)
        self.stats.report("nonfinite", (~torch.isfinite(loss)).float())

    def train_step(self) -> None:
        t = self.config.train
        self.G.train()
        self.D.train()
        # Augmentation randomness is a pure function of (seed, step, rank): nothing to checkpoint.
        self.aug_gen.manual_seed((t.seed * 1_000_003 + self.step) * 1009 + self.dist.rank + 2)
        d_phases = [p for p in self.phases if p.module == "D"]
        for i in range(t.n_critic):
            # The last round's fakes are reused by the generator phases (as the PyTorch DCGAN
            # example does), so they keep G's graph; earlier ones need none.
            batch = self._draw(keep_graph=i == t.n_critic - 1)
            for phase in d_phases:  # a regularisation phase runs in the first round only
                if phase.interval == 1 or (i == 0 and self.step % phase.interval == 0):
                    if self.private_d is not None and phase.name == "Dmain":  # DP hook
                        self.stats.report("grad_norm_d", self.private_d.step(self.objective, batch, self.nets))
                        continue
                    self._run_phase(phase, batch)
            self.images_seen += batch.real.shape[0] * self.dist.world_size
        self.D.requires_grad_(False)
        for phase in self.phases:
            if phase.module == "G" and self.step % phase.interval == 0:
                self._run_phase(phase, batch)
        for p in self.params["D"]:  # frozen blocks stay frozen
            p.requires_grad_(True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.G, self.step)
        self.augment.update(self.step, self.local_batch_size)

    # ------------------------------------------------------------------ state

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator samples and evaluations use: the EMA one, with BatchNorm statistics
        recomputed for its own weights (:func:`ganfuse.train.ema.recalibrate_batchnorm`), when
        the run keeps an EMA; else the live one."""
        if self.ema is None:
            return self.G
        if self._ema_calibrated_step != self.step:
            self._recalibrate_ema()
            self._ema_calibrated_step = self.step
        return self.ema.model

    def _recalibrate_ema(self) -> None:
        """BatchNorm statistics of the EMA generator from :data:`EMA_BN_BATCHES` batches of its own
        samples; the latents and conditions are a pure function of (seed, step), so a resumed run
        gets the very same statistics and the training noise stream is untouched."""
        gen = torch.Generator(device=self.device).manual_seed(self.config.train.seed * 7919 + self.step)
        n = self.batch_size

        def inputs(_: int) -> tuple:
            z = torch.randn(n, self.config.model.z_dim, device=self.device, generator=gen)
            return z, self.objective.sample_conditions(n, gen)

        with self.precision.autocast():
            recalibrate_batchnorm(self.ema.model, inputs, EMA_BN_BATCHES)

    def weights(self, calibrated: bool = True) -> dict[str, torch.Tensor]:
        """Every network's state, as checkpoints hold it; with ``calibrated`` the EMA generator's
        BatchNorm statistics are first recomputed for the current step."""
        if self.ema is not None and calibrated:
            self.sampling_generator  # noqa: B018 - recalibrates the EMA's BatchNorm statistics
        out = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        out.update({f"D.{k}": v for k, v in self.D.state_dict().items()})
        if self.ema is not None:
            out.update({f"G_ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        return out

    def training_state(self, stats: dict[str, dict] | None = None) -> dict[str, Any]:
        state = {
            "step": self.step,
            "images_seen": self.images_seen,
            "best_fd": self.best_fd,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sampler": self._sampler_state(),
            "augment": self.augment.state_dict(),
            # the statistics of the log interval in flight and the training time so far: a resumed
            # run's log goes on as if it had never stopped (restored by _resume only, not by a
            # NaN-guard rollback)
            "stats": self.stats.state_dict() if stats is None else stats,
            "train_seconds": self.train_seconds(),
            "rng": {
                "torch": torch.get_rng_state(),
                "noise": self.noise_gen.get_state(),
            },
        }
        for module, scaler in self.scalers.items():
            if scaler is not None:
                state[f"scaler_{module.lower()}"] = scaler.state_dict()
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.private_d is not None:  # DP hook: the accountant's history and the DP seed
            state["privacy"] = self.private_d.state_dict()
        return state

    def train_seconds(self) -> float:
        """Seconds of training so far, over every start of the run."""
        if self._run_start is None:
            return self._seconds_before
        return time.monotonic() - self._run_start

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
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.augment.load_state_dict(state["augment"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.best_fd = float(state.get("best_fd", math.inf))
        torch.set_rng_state(state["rng"]["torch"])
        self.noise_gen.set_state(state["rng"]["noise"])
        if "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        for module, scaler in self.scalers.items():
            if scaler is not None and f"scaler_{module.lower()}" in state:
                scaler.load_state_dict(state[f"scaler_{module.lower()}"])
        if self.private_d is not None:  # DP hook
            self.private_d.load_state_dict(state["privacy"])

    def _sampler_state(self) -> dict[str, int]:
        return self.sampler.state_dict() if self.sampler is not None else {"epoch": 0, "position": 0, "seed": 0}

    def _memory_state(self) -> dict[str, Any]:
        return {"weights": {k: v.clone() for k, v in self.weights(calibrated=False).items()},
                "state": self.training_state()}

    def _load_memory_state(self, snapshot: dict[str, Any]) -> None:
        # keep the data order and RNG moving forward: the batches that produced NaN are skipped
        sampler, rng = self._sampler_state(), self.training_state()["rng"]
        # DP hook: privacy spent on the skipped updates stays spent, and their noise is not reused
        privacy = self.private_d.state_dict() if self.private_d is not None else None
        self.load_training_state(snapshot["weights"], snapshot["state"])
        if self.sampler is not None:
            self.sampler.load_state_dict(sampler)
        self.noise_gen.set_state(rng["noise"])
        if privacy is not None:
            self.private_d.load_state_dict(privacy)

    def _resume(self) -> None:
        path, manifest, weights, state = self.saved
        saved = manifest.get("config", {})
        defaults = Config().to_dict()  # keys added since the run was saved take their defaults
        for section in ("data", "model"):
            if saved.get(section) and {**defaults[section], **saved[section]} != self.config.to_dict()[section]:
                raise ConfigError(
                    f"--resume: the {section} config differs from the checkpoint's; resume with the run's own "
                    f"config ({self.run_dir / 'config.yaml'})")
        try:
            self.load_training_state({k: v.to(self.device) for k, v in weights.items()}, state)
            self.stats.load_state_dict(state.get("stats", {}))
            self._seconds_before = float(state.get("train_seconds", 0.0))
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(f"--resume: {path} does not fit this run's models or optimisers "
                                  f"({str(exc).splitlines()[0][:200]})") from None
        if self.dist.is_main:  # newer checkpoints than this one are the damaged ones skipped
            set_aside_newer_checkpoints(self.run_dir, self.step)
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

    def save(self, best: bool = False) -> Path | None:
        """Write a checkpoint of the current step (into ``best/`` instead when ``best``) on rank 0.
        Every rank calls it for ``checkpoints/`` (the in-flight statistics are averaged over ranks);
        ``best/`` is written by rank 0 alone and is for sampling, not resuming."""
        stats = self.stats.state_dict(None if best else self.dist)
        if not self.dist.is_main:
            return None
        meta = {"config": self.config.to_dict(), "precision": self.precision.name,
                "channels": self.channels, **self.objective.metadata(),
                "best_fd": None if math.isinf(self.best_fd) else self.best_fd}
        if self.private_d is not None:  # DP hook: the epsilon these weights spent
            meta["privacy"] = self.private_d.summary()
        keep, folder = (1, "best") if best else (self.config.train.keep_checkpoints, "checkpoints")
        return save_checkpoint(self.run_dir, self.step, self.weights(), self.training_state(stats), meta,
                               keep=keep, folder=folder)

    # ------------------------------------------------------------------ outputs

    @torch.no_grad()
    def save_grid(self) -> Path | None:
        if not self.dist.is_main:
            return None
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

    # ------------------------------------------------------------------ the loop

    def fit(self, steps: int | None = None, max_minutes: float | None = None) -> Path:
        """Train until ``steps`` (total, counting resumed ones) or ``max_minutes`` of wall clock."""
        t = self.config.train
        steps = steps if steps is not None else t.steps
        max_minutes = max_minutes if max_minutes is not None else t.max_minutes
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else math.inf
        if self.dist.is_main:
            log.info("training %s on %s: device=%s precision=%s (%s) batch=%d steps=%d%s", self.config.model.arch,
                     self.dataset.name, self.device, self.precision.name, self.precision_reason, self.batch_size, steps,
                     f" max_minutes={max_minutes:g}" if max_minutes else "")
        if self.guard is not None:
            self.guard.take_snapshot()
        if self.dist.is_main and self.logger is None:
            self.logger = make_loggers(self.run_dir, self.config.train.loggers)
        bar = tqdm(total=steps, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True)
        interval_start, interval_images = time.perf_counter(), self.images_seen
        fit_start = time.monotonic()
        run_start = self._run_start = fit_start - self._seconds_before
        last_saved = self.step if self.step > 0 else -1
        interval_data = self.data_seconds
        try:
            while self.step < steps and not self._out_of_time(deadline):
                self.train_step()
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == steps:
                    stats = self.stats.flush(self.dist)
                    finite = stats.get("nonfinite", 0.0) == 0.0 and all(math.isfinite(v) for v in stats.values())
                    if self.guard is not None and not self.guard.check(finite, self.step):
                        bar.n = self.step
                        bar.refresh()
                        continue
                    now = time.perf_counter()
                    elapsed = max(now - interval_start, 1e-9)
                    img_s = (self.images_seen - interval_images) / elapsed
                    interval_start, interval_images = now, self.images_seen
                    record = {"step": self.step, "time": round(time.monotonic() - run_start, 3),
                              "images": self.images_seen, "img_per_s": round(img_s, 1), **stats}
                    if t.profile:  # share of the interval's wall clock spent waiting for data
                        record["data_wait_share"] = round((self.data_seconds - interval_data) / elapsed, 4)
                        interval_data = self.data_seconds
                    if self.private_d is not None:  # DP hook: the privacy spent so far
                        record["epsilon"] = self.private_d.summary()["epsilon"]
                    if self.augment.enabled:
                        record["augment_p"] = self.augment.p
                        if self.augment.target is not None:
                            record["ada_rt"] = self.augment.last_rt
                    for callback in self.callbacks if self.dist.is_main else ():
                        record.update(callback(self) or {})
                    record.pop("nonfinite", None)
                    if self.logger is not None:
                        self.logger.log(record)
                    # with --max-minutes the bar's own ETA (for the step limit) says little: show
                    # the wall-clock budget left as well
                    left = {"left": _minutes_seconds(deadline - time.monotonic())} if math.isfinite(deadline) else {}
                    bar.set_postfix(d=f"{stats.get('loss_d', 0):.3f}", g=f"{stats.get('loss_g', 0):.3f}",
                                    img_s=f"{img_s:.0f}", **left, refresh=False)
                if self.step % t.sample_every == 0:
                    self.save_grid()
                if self.step % t.checkpoint_every == 0:
                    # An interval that went non-finite since the last guard check is not saved:
                    # the next log step rolls it back, and a later checkpoint saves good weights.
                    if self.guard is not None and not self.stats.all_finite("nonfinite", self.dist):
                        log.warning("step %d: not saving a checkpoint over non-finite losses", self.step)
                        continue
                    self.save()
                    last_saved = self.step
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG):
                raise
            raise UserError(f"writing to {self.run_dir} failed at step {self.step}: {exc.strerror}; the last "
                            f"good checkpoint is kept; fix the disk and continue with --resume") from None
        finally:
            self._seconds_before, self._run_start = time.monotonic() - run_start, None
            bar.close()
            if self.logger is not None:
                self.logger.close()
                self.logger = None
        if last_saved != self.step:
            self.save()
        self.save_grid()
        if self.private_d is not None and self.dist.is_main:  # DP hook
            log.info("privacy: epsilon %.4g at delta %.3g after %d D updates", self.private_d.epsilon(),
                     self.private_d.delta, self.private_d.updates)
        if t.profile and self.step:
            log.info("profile: %.1f%% of training time was spent waiting for data",
                     100 * self.data_seconds / max(time.monotonic() - fit_start, 1e-9))
        self.dist.barrier()
        return self.run_dir

    def _out_of_time(self, deadline: float) -> bool:
        """Whether the wall-clock budget is spent; rank 0's clock decides for every rank."""
        if not self.dist.enabled:
            return time.monotonic() >= deadline
        flag = torch.tensor([float(time.monotonic() >= deadline)], device=self.device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())


def _minutes_seconds(seconds: float) -> str:
    """``125.4 -> "2:05"`` (never negative)."""
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def build_trainer(config: Config, out: str | Path, resume: bool = False, progress: bool = True) -> Trainer:
    """The trainer for ``config`` with its family's default callbacks (diagnostics and FD for
    GANs, the attribute monitor for text-to-image on ``shapes``). Construction does the setup
    (data, text embeddings, models, resume); :meth:`Trainer.fit` then trains."""
    trainer = Trainer(config, out, resume=resume, progress=progress)
    t = trainer.config.train
    if arch_family(config.model.arch) == "gan":
        attach_default_callbacks(trainer)
        return trainer
    if t.eval_every > 0 and trainer.dist.is_main:
        if config.data.name == "shapes":
            trainer.callbacks.append(AttributeMonitor(trainer))
        elif config.data.name == "scenes":
            trainer.callbacks.append(SceneMonitor(trainer))
        else:
            log.warning("train.eval_every: the exact judges are for data.name=shapes or scenes; not tracked")
    if t.monitor_every > 0:
        log.warning("train.monitor_every: the mode-collapse monitor is for class/unconditional runs; ignored")
    return trainer


def train(config: Config | str, out: str | Path, resume: bool = False, progress: bool = True,
          steps: int | None = None, max_minutes: float | None = None) -> Path:
    """Train a GAN from a config (or preset name) into ``out``; returns the run directory.
    ``max_minutes`` bounds the training loop (setup such as caption encoding comes before it)."""
    if isinstance(config, str):
        config = load_config(config)
    trainer = build_trainer(config, out, resume=resume, progress=progress)
    try:
        return trainer.fit(steps=steps, max_minutes=max_minutes)
    finally:
        trainer.dist.close()

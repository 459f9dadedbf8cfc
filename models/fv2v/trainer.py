"""fv2v training: self-reenactment (source and driving frames of one clip), the paper's losses.

The networks stay inference-only modules (model.py); everything that exists only for training lives
here: the discriminator, the losses, optimizers, checkpoints with optimizer state, sample grids, DDP.
The same command runs under torchrun: a process group is set up only when WORLD_SIZE > 1.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from models.device import default_device
from models.fv2v import losses
from models.fv2v import weights as W
from models.fv2v.config import Fv2vConfig, get_config
from models.fv2v.dataset import PairDataset
from models.fv2v.discriminator import MultiScaleDiscriminator
from models.fv2v.model import Fv2vModel, Runtime, select_runtime
from models.fv2v.transform import random_affine, warp_image

CHECKPOINT = "checkpoint.safetensors"  # training state: model + discriminator + optimizers
MODEL = "model.safetensors"  # inference weights only (what the profile loads)
LOG = "log.jsonl"
SAMPLES = "samples"
GRID_ROWS = 4  # pairs shown per sample grid
METRIC_WINDOW = 20  # steps averaged for the metrics in the model card


class TrainError(RuntimeError):
    """A training run cannot start (bad run folder, nothing to resume, ...)."""


class GeneratorLoss(nn.Module):
    """Forward pass of F, L, H, Δ, M, G on a batch and every generator-side loss.

    The discriminator is held but not registered: under DDP it belongs to DiscriminatorLoss's wrapper."""

    def __init__(self, model: Fv2vModel, disc: MultiScaleDiscriminator) -> None:
        super().__init__()
        self.model = model
        self._disc = [disc]  # a list hides it from nn.Module registration
        self.cfg = model.cfg

    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        pose_source: torch.Tensor,
        pose_driving: torch.Tensor,
        use_gan: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        lw, m = self.cfg.loss, self.model
        cache, hp_s = m.source_with_pose(source)
        hp_d, delta_d, rot_d, kp_d = m.drive(driving, cache.kp_canonical)
        pred, motion = m.animate(cache, rot_d, kp_d)

        terms: dict[str, torch.Tensor] = {
            "l1": lw.l1 * losses.reconstruction_l1(pred, driving),
            "ssim": lw.ssim * losses.ssim_loss(pred, driving, lw.ssim_min_size),
        }
        if use_gan:
            disc = self._disc[0]
            with torch.no_grad():
                real = disc(driving)
            fake = disc(pred)
            terms["gan"] = lw.gan * losses.hinge_g_loss([f[1] for f in fake])
            terms["fm"] = lw.feature_matching * losses.feature_matching([r[0] for r in real], [f[0] for f in fake])
        # Equivariance: keypoints of a randomly warped driving frame must move with the warp.
        theta = random_affine(
            driving.shape[0], lw.eq_max_rot_deg, lw.eq_max_scale, lw.eq_max_shift, device=driving.device
        )
        warped = warp_image(driving, theta)
        kp_w = m.drive(warped, cache.kp_canonical).keypoints
        terms["equivariance"] = lw.equivariance * losses.equivariance(kp_d, kp_w, theta)
        terms["kp_prior"] = lw.kp_prior * losses.keypoint_prior(kp_d, lw.kp_min_dist_sq, lw.kp_depth_target)
        # Head pose vs the MediaPipe teacher, on both frames.
        pose_terms = [
            losses.head_pose(hp, target, m.head_pose.bin_index(target.nan_to_num()), lw.head_pose_reg)
            for hp, target in ((hp_d, pose_driving), (hp_s, pose_source))
        ]
        terms["head_pose"] = lw.head_pose * torch.stack(pose_terms).mean()
        terms["deformation"] = lw.deformation * losses.deformation_prior(delta_d)
        total = torch.stack(list(terms.values())).sum()
        return total, terms, pred.detach(), motion.occlusion.detach()


class DiscriminatorLoss(nn.Module):
    """Hinge loss of the multi-scale discriminator on real driving frames vs generated ones."""

    def __init__(self, disc: MultiScaleDiscriminator) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return losses.hinge_d_loss([r[1] for r in self.disc(real)], [f[1] for f in self.disc(fake.detach())])


@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    """Optimizer steps done in total (including resumed ones)."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Per-step losses of this process's run (weighted terms, 'total', 'disc')."""
    model_path: Path | None = None
    """The inference weights written at the end (rank 0)."""


class Fv2vTrainer:
    """Model + discriminator + losses + optimizers; one train_step() per batch."""

    def __init__(self, cfg: Fv2vConfig, runtime: Runtime | None = None, ddp: bool = False) -> None:
        self.cfg = cfg
        self.runtime = runtime or select_runtime()
        self.model = Fv2vModel(cfg).place(self.runtime)
        self.disc = MultiScaleDiscriminator(cfg).to(self.runtime.device)
        self.ddp = ddp
        self.step = 0
        self._build()

    def _build(self) -> None:
        t = self.cfg.train
        g_loss: nn.Module = GeneratorLoss(self.model, self.disc)
        d_loss: nn.Module = DiscriminatorLoss(self.disc)
        if self.ddp:
            ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
            g_loss = DistributedDataParallel(g_loss, device_ids=ids)
            d_loss = DistributedDataParallel(d_loss, device_ids=ids, broadcast_buffers=False)
        self.g_loss, self.d_loss = g_loss, d_loss
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """One generator and one discriminator update. Returns (losses, predictions, occlusion maps)."""
        dev = self.runtime.device
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        self.model.train()
        self.disc.train()
        use_gan = self.step >= self.cfg.loss.gan_start_step and (
            self.cfg.loss.gan > 0 or self.cfg.loss.feature_matching > 0
        )
        self.disc.requires_grad_(False)  # G's step must not touch D's gradients (nor its DDP hooks)
        with self.runtime.autocast():
            total, terms, pred, occ = self.g_loss(
                b["source"], b["driving"], b["pose_source"], b["pose_driving"], use_gan
            )
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        self.disc.requires_grad_(True)
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["total"] = float(total.detach())
        if use_gan:
            with self.runtime.autocast():
                d = self.d_loss(b["driving"], pred)
            self.opt_d.zero_grad(set_to_none=True)
            d.backward()
            self.opt_d.step()
            out["disc"] = float(d.detach())
        self.step += 1
        return out, pred, occ

    @torch.no_grad()
    def evaluate(self, batch: dict[str, torch.Tensor]) -> float:
        """Unweighted L1 reconstruction of the driving frames of a fixed batch (eval mode)."""
        self.model.eval()
        dev = self.runtime.device
        src, drv = batch["source"].to(dev), batch["driving"].to(dev)
        with self.runtime.autocast():
            cache = self.model.source(src)
            d = self.model.drive(drv, cache.kp_canonical)
            pred, _ = self.model.animate(cache, d.rotation, d.keypoints)
        return float(losses.reconstruction_l1(pred, drv))

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self, run: Path, training_data: list[str], metrics: dict[str, float]) -> Path:
        """RUN/checkpoint.safetensors (resumable) and RUN/model.safetensors (inference)."""
        g_t, g_groups = W.optimizer_tensors(self.opt_g, "opt_g")
        d_t, d_groups = W.optimizer_tensors(self.opt_d, "opt_d")
        extra = {f"disc.{k}": v for k, v in self.disc.state_dict().items()} | g_t | d_t
        W.save(
            run / CHECKPOINT,
            self.model,
            steps=self.step,
            training_data=training_data,
            metrics=metrics,
            extra=extra,
            extra_card={"optimizers": {"opt_g": g_groups, "opt_d": d_groups}},
        )
        W.save(run / MODEL, self.model, steps=self.step, training_data=training_data, metrics=metrics)
        return run / MODEL

    def resume(self, path: Path) -> None:
        """Restore model, discriminator, optimizers and step from a training checkpoint."""
        card = W.read_card(path)
        W.check_config(card, self.cfg, path)
        tensors = W.load_tensors(path)
        model_sd = {k[len(W.MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(W.MODEL_PREFIX)}
        disc_sd = {k[5:]: v for k, v in tensors.items() if k.startswith("disc.")}
        if not disc_sd or "optimizers" not in card:
            raise TrainError(f"{path} holds inference weights only, not a training checkpoint")
        self.model.load_state_dict(model_sd)
        self.disc.load_state_dict(disc_sd)
        W.restore_optimizer(self.opt_g, tensors, "opt_g", card["optimizers"]["opt_g"])
        W.restore_optimizer(self.opt_d, tensors, "opt_d", card["optimizers"]["opt_d"])
        self.step = int(card["steps"])


def sample_grid(batch: dict[str, torch.Tensor], pred: torch.Tensor, occ: torch.Tensor, path: Path) -> None:
    """PNG with one row per pair: source | driving | generated | occlusion map."""
    n = min(GRID_ROWS, pred.shape[0])
    size = pred.shape[-1]
    occ_img = torch.nn.functional.interpolate(occ[:n].float(), size=(size, size), mode="bilinear").cpu()
    cols = [batch["source"][:n], batch["driving"][:n], pred[:n].float().cpu(), occ_img.expand(-1, 3, -1, -1)]
    rows = torch.cat([torch.cat(list(c.cpu().float()), dim=1) for c in cols], dim=2)  # (3, n*S, 4*S)
    img = (rows.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def _distributed() -> tuple[bool, int, int]:
    """(ddp, rank, local_rank); the process group is created only when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False, 0, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        on_gpu = default_device().type == "cuda"
        backend = "nccl" if on_gpu else "gloo"
        if on_gpu:
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return True, dist.get_rank(), local


def _batches(loader: DataLoader[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(
    data: str | Path,
    config: str | Fv2vConfig,
    out: str | Path,
    steps: int | None = None,
    resume: bool = False,
    batch: int | None = None,
    progress: bool = True,
    eval_batch: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train (or resume) a run in folder `out` on a prepared dataset; returns the loss history."""
    cfg = get_config(config) if isinstance(config, str) else config
    run = Path(out)
    ckpt = run / CHECKPOINT
    if resume and not ckpt.is_file():
        raise TrainError(f"nothing to resume: {ckpt} does not exist")
    if not resume and ckpt.is_file():
        raise TrainError(f"{run} already holds a checkpoint; pass --resume or choose another --out")
    dataset = PairDataset(data, size=cfg.image_size)
    ddp, rank, local = _distributed()
    runtime = select_runtime(default_device(local))
    trainer = Fv2vTrainer(cfg, runtime, ddp=ddp)
    if resume:
        trainer.resume(ckpt)
    total_steps = steps if steps is not None else cfg.train.steps
    bsz = batch or cfg.train.batch
    sampler = DistributedSampler(dataset) if ddp else RandomSampler(dataset)
    loader = DataLoader(
        dataset,
        batch_size=bsz,
        sampler=sampler,
        drop_last=len(dataset) >= bsz,
        num_workers=cfg.train.num_workers,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=cfg.train.num_workers > 0,
    )
    result = TrainResult(steps=trainer.step)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    log = open(run / LOG, "a") if rank == 0 else None
    bar = tqdm(
        total=total_steps,
        initial=trainer.step,
        disable=not progress or rank != 0,
        unit="step",
        dynamic_ncols=True,
    )
    batches = _batches(loader)
    t0 = time.time()
    try:
        while trainer.step < total_steps:
            b = next(batches)
            out, pred, occ = trainer.train_step(b)
            if not math.isfinite(out["total"]):
                raise TrainError(f"loss became {out['total']} at step {trainer.step}; lower the lr or resume")
            result.history.append(out)
            bar.update(1)
            bar.set_postfix(loss=f"{out['total']:.3f}", l1=f"{out['l1']:.3f}")
            if rank != 0:
                continue
            assert log is not None
            if trainer.step % cfg.train.log_every == 0:
                log.write(json.dumps({"step": trainer.step, "time_s": round(time.time() - t0, 2), **out}) + "\n")
                log.flush()
            if trainer.step % cfg.train.sample_every == 0 or trainer.step == total_steps:
                sample_grid(b, pred, occ, run / SAMPLES / f"step_{trainer.step:07d}.png")
            if trainer.step % cfg.train.checkpoint_every == 0 or trainer.step == total_steps:
                result.model_path = trainer.save(run, dataset.sources(), _metrics(result.history, trainer, eval_batch))
    finally:
        bar.close()
        if log is not None:
            log.close()
        if ddp:
            dist.barrier()
    result.steps = trainer.step
    return result


def _metrics(
    history: list[dict[str, float]], trainer: Fv2vTrainer, eval_batch: dict[str, torch.Tensor] | None
) -> dict[str, Any]:
    recent = history[-METRIC_WINDOW:]
    metrics = {f"train_{k}": float(np.mean([h[k] for h in recent if k in h])) for k in recent[0]} if recent else {}
    if eval_batch is not None:
        metrics["eval_l1"] = trainer.evaluate(eval_batch)
    return metrics

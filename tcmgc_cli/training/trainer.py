"""Training: the reference recipe over cached frame features (or cached frames), resumable to the same weights.

State moves as: Split + FeatureCache -> TrainData (tokens, video index, frame features) -> Trainer.fit() -> the run
folder's checkpoints (the last every epoch, atomically; the best by validation t2v R@1) and metrics log.
Every random choice depends on (seed, epoch) or on the RNG state saved with the checkpoint, so a run killed and
resumed ends with the same weights as an uninterrupted one (on CPU).
"""

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import Provenance, RunFolder, Trained, TrainState
from tcmgc_cli.config import TrainConfig
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.distributed import Dist
from tcmgc_cli.errors import CheckpointError, NumericsError
from tcmgc_cli.evaluation.retrieval import measure_split
from tcmgc_cli.model.encoder import Tokenizer
from tcmgc_cli.model.factory import ModelSpec
from tcmgc_cli.model.features import TextFeatures
from tcmgc_cli.model.losses import tcmgc_loss
from tcmgc_cli.model.tcmgc import TcmgcModel
from tcmgc_cli.optim import freeze, make_optimizer, warmup_cosine
from tcmgc_cli.precision import autocast

Event = dict[str, Any]


@dataclass
class TrainData:
    tokens: torch.Tensor  # (N, L) every caption, tokenized
    caption_video: torch.Tensor  # (N,) video index of each caption
    frames: torch.Tensor | None  # (V, T, D) cached frame features, when the image tower is frozen
    video_ids: list[str]
    masks: torch.Tensor | None = None  # (V, T) bool real frames (False: a zero-padded slot)

    @classmethod
    def build(cls, split: Split, cache: FeatureCache, tokenizer: Tokenizer, from_frames: bool) -> "TrainData":
        tokens = torch.cat([tokenizer(split.captions[i : i + 4096]) for i in range(0, len(split.captions), 4096)])
        feats, masks = cache.entry_inputs(split.video_ids)
        return cls(tokens, torch.tensor(split.caption_video), None if from_frames else torch.from_numpy(feats),
                   split.video_ids, torch.from_numpy(masks))  # fmt: skip


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(cfg: TrainConfig, data: TrainData, epoch: int) -> torch.Tensor:
    """The caption indices of one epoch, in order: all captions, or one per video, shuffled by (seed, epoch)."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    if cfg.expand_captions:
        return torch.randperm(len(data.tokens), generator=g)
    n_videos = int(data.caption_video.max()) + 1
    pick = torch.empty(n_videos, dtype=torch.long)
    keys = torch.rand(len(data.tokens), generator=g)
    for v in range(n_videos):
        idx = (data.caption_video == v).nonzero().flatten()
        pick[v] = idx[keys[idx].argmax()]
    return pick[torch.randperm(n_videos, generator=g)]


class TrainStep(torch.nn.Module):
    """One forward pass of training: texts and videos encoded on this process, gathered across processes, scored.

    A module of its own so that DistributedDataParallel wraps exactly the computation whose gradients it averages.
    """

    def __init__(self, model: TcmgcModel, dist: Dist, text_trains: bool) -> None:
        super().__init__()
        self.model, self.dist, self.text_trains = model, dist, text_trains

    def forward(
        self, tokens: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L); frames (B, T, D) features or (B, T, S, S, 3) uint8; mask (B, T) real frames or None
        -> logits (N, N), parts (N, N, K), N = B x processes."""
        model, g = self.model, self.dist.gather
        with torch.set_grad_enabled(self.text_trains and torch.is_grad_enabled()):
            text = model.encode_text(tokens)
        if frames.dtype == torch.uint8:
            frames = model.encode_frames(frames, mask)
        text = TextFeatures(g(text.words), g(text.sentence), None if text.mask is None else g(text.mask))
        out = model(text, model.encode_video(g(frames), None if mask is None else g(mask.to(frames.dtype))))
        return out["logits"], out["parts"]


class Trainer:
    def __init__(
        self,
        model: TcmgcModel,
        spec: ModelSpec,
        cfg: TrainConfig,
        data: TrainData,
        run: RunFolder,
        device: torch.device,
        cache: FeatureCache,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.model, self.spec, self.cfg, self.data, self.run = model, spec, cfg, data, run
        self.device, self.cache, self.on_event = device, cache, on_event or (lambda e: None)
        self.dist = Dist.from_env(device)
        freeze(model, cfg)
        self.step = self.dist.wrap(TrainStep(model, self.dist, text_trains=cfg.freeze != "all"), device)
        self.batches_per_epoch = max(1, math.ceil(len(epoch_order(cfg, data, 0)) / cfg.batch_size))
        self.total_steps = max(1, cfg.epochs * self.batches_per_epoch // cfg.accumulate)
        self.optimizer = make_optimizer(model, cfg)
        self.state = TrainState()
        self.precision = self._precision()

    def _precision(self) -> str:
        """fp32 or bf16 autocast for the whole step: as configured, or the faster on this host ("auto"), measured on
        one real step (this process's batch, forward and backward, never applied) by rank 0 alone, without the
        process group; every process takes rank 0's answer."""
        from tcmgc_cli.precision import resolve

        sample = epoch_order(self.cfg, self.data, 0)[: max(2, self.cfg.batch_size // self.dist.world)]
        alone = TrainStep(self.model, Dist(), text_trains=self.cfg.freeze != "all")
        cfg = self.spec.config

        def run(p: str) -> torch.Tensor:
            logits, parts = self._forward(sample, p, alone)
            tcmgc_loss(logits.float(), parts.float(), cfg.sdr_alpha, cfg.sdr_rule)["loss"].backward()  # type: ignore[no-untyped-call]
            self.model.zero_grad(set_to_none=True)  # timed, never applied
            return logits.detach().float()

        training = self.model.training
        self.model.eval()  # no dropout, and the random state is left as it was: a measured run trains the same
        mine = self.cfg.precision
        if self.dist.rank == 0:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                mine = resolve(self.cfg.precision, f"train step {self.spec.name} ({self.spec.clip})", self.device, run)
        self.model.train(training)
        return str(self.dist.gather_objects(mine)[0]) if self.dist.world > 1 else mine

    @property
    def visual_trained(self) -> bool:
        return self.cfg.freeze == "none"

    # ---- one step -------------------------------------------------------------------------------------------
    def _frames(self, videos: torch.Tensor) -> torch.Tensor:
        """Cached frame features (B, T, D), or the cached uint8 frames (B, T, S, S, 3) when CLIP's image tower trains."""
        if self.data.frames is not None:
            return self.data.frames[videos].to(self.device)
        raw = [
            torch.from_numpy(self.cache.frames(self.data.video_ids[v])) for v in videos.tolist()
        ]  # (T, S, S, 3) each
        return torch.stack(raw).to(self.device)

    def _forward(
        self, captions: torch.Tensor, precision: str, step: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        videos = self.data.caption_video[captions]
        mask = None if self.data.masks is None else self.data.masks[videos].to(self.device)
        with autocast(self.device, precision):
            logits, parts = (step or self.step)(self.data.tokens[captions].to(self.device), self._frames(videos), mask)
        return logits, parts

    def _loss(self, captions: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, parts = self._forward(captions, self.precision)
        cfg = self.spec.config
        return tcmgc_loss(logits.float(), parts.float(), cfg.sdr_alpha, cfg.sdr_rule)

    def _lr(self) -> float:
        factor = warmup_cosine(self.state.step / self.total_steps, self.cfg.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return self.cfg.lr * factor

    def _optimizer_step(self) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], self.cfg.grad_clip
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(max=math.log(self.spec.config.logit_scale_max))
        self.state.step += 1

    def _epoch(self, epoch: int) -> None:
        self.model.train()
        order = epoch_order(self.cfg, self.data, epoch)
        b, world, rank = self.cfg.batch_size, self.dist.world, self.dist.rank
        start, seen = time.perf_counter(), 0
        for i in range(self.batches_per_epoch):
            batch = order[i * b : (i + 1) * b]
            if len(batch) < 2 * world:
                continue
            share = len(batch) // world
            local = batch[rank * share : (rank + 1) * share]  # each process's part of the global batch
            lr = self._lr()
            losses = self._loss(local)
            if not bool(torch.isfinite(losses["loss"])):
                raise NumericsError(
                    self._diverged(
                        f"the loss is {float(losses['loss'].detach())} at epoch {epoch + 1}, step {self.state.step + 1}"
                    )
                )
            (losses["loss"] / self.cfg.accumulate).backward()  # type: ignore[no-untyped-call]
            seen += 1
            if seen % self.cfg.accumulate == 0:
                self._optimizer_step()
            event = {"kind": "step", "epoch": epoch + 1, "batch": i + 1, "batches": self.batches_per_epoch,
                     "step": self.state.step, "lr": lr, "tau": float(self.model.tau.detach()),
                     "it_s": seen / (time.perf_counter() - start), **{k: float(v.detach()) for k, v in losses.items()}}  # fmt: skip
            self.on_event(event)
            if self.dist.rank == 0 and (i + 1) % self.cfg.log_every == 0:
                self.run.log(event)
        if seen % self.cfg.accumulate:
            self._optimizer_step()

    # ---- evaluation, checkpoints, resume ----------------------------------------------------------------------
    def _trained(self) -> Trained:
        tok = Tokenizer(self.spec.clip, self.spec.config.max_words)
        return Trained(
            self.model, self.spec, tok, self.device, self.cache.settings.encoder_fingerprint, self.visual_trained
        )

    def validate(self, split: Split) -> dict[str, float]:
        """Metrics on `split`, and the score variance on its positive pairs (logged every epoch: SDR's effect)."""
        self.model.eval()
        return measure_split(self._trained(), self.cache, split, self.cfg.eval_chunk)[1]

    def _save(self, improved: bool) -> None:
        provenance = Provenance(self.cache.settings.encoder_fingerprint, self.visual_trained)
        resume = {"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state()}
        self.run.save(self.model, self.spec, self.cfg, self.state, provenance, resume, improved)

    def resume(self) -> bool:
        """Continue from the run's last checkpoint (or the one before, if that one is damaged); False if none."""
        payload = self.run.resume_payload()
        if payload is None:
            return False
        spec = ModelSpec.from_dict(payload["spec"]).to_dict()  # keys added since it was saved take their defaults
        if spec != self.spec.to_dict() or _recipe(payload["train"]) != _recipe(asdict(self.cfg)):
            raise CheckpointError(
                f"{payload['path']} was trained with another config: resume it with the same options, or use a new "
                "--output."
            )
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["resume"]["optimizer"])
        torch.set_rng_state(payload["resume"]["rng"])
        self.state = TrainState(**payload["train_state"])
        return True

    def _diverged(self, what: str) -> str:
        """The one-line error for a run whose numbers stopped being finite; no checkpoint of it is written."""
        kept = (f"The last good checkpoint is kept: {self.run.last} (epoch {self.state.epoch})." if self.state.epoch
                else "No checkpoint was written (it diverged in its first epoch).")  # fmt: skip
        return (f"training diverged: {what}. The likely cause is a learning rate too high (lr {self.cfg.lr:g}: "
                f"try --lr {self.cfg.lr / 10:g}); a cache row with huge values can do it too. {kept}")  # fmt: skip

    def _check_weights(self, epoch: int) -> None:
        bad = [n for n, p in self.model.named_parameters() if not bool(p.detach().isfinite().all())]
        if bad:
            raise NumericsError(self._diverged(f"weights became NaN or infinite in epoch {epoch} ({bad[0]})"))

    def fit(self, val: Split | None) -> TrainState:
        while self.state.epoch < self.cfg.epochs:
            t0 = time.perf_counter()
            self._epoch(self.state.epoch)
            self._check_weights(self.state.epoch + 1)
            self.state.epoch += 1
            record: Event = {
                "kind": "epoch",
                "epoch": self.state.epoch,
                "step": self.state.step,
                "seconds": time.perf_counter() - t0,
            }
            improved = False
            if self.dist.rank == 0:
                if val is not None:
                    record.update(self.validate(val))
                    improved = record["t2v_R@1"] > self.state.best
                    if improved:
                        self.state.best, self.state.best_epoch = record["t2v_R@1"], self.state.epoch
                else:
                    improved = True
                self.state.history.append(record)
                self._save(improved)
                self.run.log(record)
            self.on_event(record)
            self.dist.barrier()
        return self.state


def _recipe(train: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with its checkpoint: the recipe, not how fast the host runs it."""
    return {k: v for k, v in train.items() if k != "precision"}

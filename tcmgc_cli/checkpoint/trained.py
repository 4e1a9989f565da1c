"""A trained model loaded from its checkpoint, and opened against the cache it reads (checked against each other).

trained, cache, where = open_trained(Path("runs/my-run"))  # the run's best checkpoint, the workspace's cache
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint.files import load_into, read_checkpoint
from tcmgc_cli.checkpoint.run_folder import find_checkpoint, latest_run
from tcmgc_cli.errors import CacheError, CheckpointError
from tcmgc_cli.model.encoder import Tokenizer, resolve_device
from tcmgc_cli.model.factory import ModelSpec, create_model
from tcmgc_cli.model.tcmgc import TcmgcModel
from tcmgc_cli.precision import autocast
from tcmgc_cli.workspace import default_cache_path


@dataclass
class Trained:
    """A model loaded from a checkpoint, with what it needs to read a cache."""

    model: TcmgcModel
    spec: ModelSpec
    tokenizer: Tokenizer
    device: torch.device
    encoder_fingerprint: str  # the cache encoder it was trained on
    visual_trained: bool  # True when the image tower was fine-tuned: frames must be re-encoded
    precision: str = "fp32"  # of the text tower and temporal encoder: "fp32" or "bf16" (scoring stays fp32)


def load_trained(path: Path, device: str = "auto") -> Trained:
    """A run folder (its best checkpoint) or checkpoint file, as a model in eval mode on `device`."""
    file = find_checkpoint(path)
    payload = read_checkpoint(file)
    spec = ModelSpec.from_dict(payload["spec"])
    model = create_model(ModelSpec(spec.name, spec.clip, None, spec.config), weights_follow=True)
    load_into(model, payload["state_dict"], str(file))
    dev = resolve_device(device)
    model = model.eval().to(dev)
    info = payload.get("data", {})
    return Trained(model, spec, Tokenizer(spec.clip, spec.config.max_words), dev,
                   info.get("encoder_fingerprint", ""), bool(info.get("visual_trained", False)))  # fmt: skip


def check_cache(cache: FeatureCache, spec: ModelSpec, *, needs_frames: bool, fingerprint: str = "") -> None:
    """One line for a cache a model cannot read: frames missing when its image tower runs (fine-tuned, or training
    end to end), another encoder (by `fingerprint` when the checkpoint recorded one, else by model name), or
    another number of frames."""
    settings = cache.settings
    if needs_frames and not settings.store_frames:
        raise CacheError(
            f"the image tower runs on frames here (fine-tuned, or trained end to end), and {cache.path} holds only "
            "features: re-extract with --store-frames into another --cache (to train, --freeze-backbone needs none)."
        )
    if not needs_frames and fingerprint and settings.encoder_fingerprint != fingerprint:
        raise CacheError(
            f"{cache.path} was built by encoder {settings.encoder_fingerprint}, the checkpoint by "
            f"{fingerprint}: extract with --model {spec.name} into another --cache."
        )
    if not needs_frames and not fingerprint and settings.encoder != spec.name:
        raise CacheError(f"{cache.path} was extracted with --model {settings.encoder}, this run uses {spec.name}: "
                         f"extract with --model {spec.name}.")  # fmt: skip
    if settings.num_frames != spec.config.num_frames:
        raise CacheError(
            f"{cache.path} holds {settings.num_frames} frames per video, {spec.name} expects "
            f"{spec.config.num_frames}: re-extract with --num-frames {spec.config.num_frames} into another --cache, "
            "or --set model.num_frames=..."
        )


def open_trained(
    checkpoint: Path | None = None, cache: Path | None = None, device: str = "auto", precision: str = "auto"
) -> tuple[Trained, FeatureCache, Path]:
    """The checkpoint (default: the newest run's best), the cache it reads (default: the workspace's cache for its
    model), checked against each other, and where the checkpoint came from."""
    source = checkpoint or latest_run()
    if source is None:
        raise CheckpointError("no trained run in the workspace: train one with `tcmgc train` or pass --checkpoint.")
    trained = load_trained(source, device)
    features = FeatureCache(cache or default_cache_path(trained.spec.name))
    if trained.visual_trained and tower_fingerprint(trained) == features.settings.encoder_fingerprint:
        trained = dataclasses.replace(trained, visual_trained=False)  # its tower is the cache's: the features are it
    check_cache(features, trained.spec, needs_frames=trained.visual_trained, fingerprint=trained.encoder_fingerprint)
    return dataclasses.replace(trained, precision=model_precision(trained, precision)), features, source


def model_precision(trained: Trained, precision: str) -> str:
    """fp32 or bf16 for the text tower and temporal encoder: as asked, or the faster one on this host ("auto")."""
    from tcmgc_cli.precision import resolve

    model, dev, cfg = trained.model, trained.device, trained.spec.config
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 1000, (8, cfg.max_words), generator=gen).to(dev)
    frames = torch.randn(8, cfg.num_frames, cfg.embed_dim, generator=gen).to(dev)

    @torch.no_grad()
    def run(p: str) -> torch.Tensor:
        with autocast(dev, p):
            sentence = model.encode_text(tokens).sentence
            temporal = model.encode_video(frames).temporal.mean(1)
        return torch.cat([sentence.float(), temporal.float()], -1)  # (8, 2D)

    return resolve(precision, f"text and temporal {trained.spec.name} ({trained.spec.clip})", dev, run)


def tower_fingerprint(trained: Trained) -> str:
    """The fingerprint `tcmgc extract` records for an image tower with these weights (fp32)."""
    from tcmgc_cli.model.encoder import module_fingerprint

    return f"{trained.spec.clip}:{module_fingerprint(trained.model.clip.visual)}"

"""Torch-free configuration dataclasses, so that the CLI can parse and validate without loading torch."""

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tcmgc_cli.defaults import FPS, MAX_WORDS, NUM_FRAMES, TEMPORAL_POSITIONS
from tcmgc_cli.errors import ConfigError

PADDINGS = ("zero", "repeat")


@dataclass(frozen=True)
class TrackConfig:
    """How a cache holds videos (a track of frames at `fps`) and which entries of a track the model scores."""

    fps: float = FPS  # track rate: frames decoded and encoded per second of video (the reference's 1 fps)
    num_frames: int = NUM_FRAMES  # T (Nf): frames per scored entry
    window: int = 0  # frames of consecutive track frames per entry; 0: one entry per video (the reference's input)
    stride: int = 0  # frames between window starts; 0: half a window
    padding: str = "zero"  # an entry with fewer frames than T: "zero" (the reference: the image tower's output for
    # an all-zero normalized frame in the rest, masked) or "repeat" (its frames spread over every slot)

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ConfigError(f"--fps must be more than 0 (got {self.fps:g}): 1 is the reference's rate.")
        if self.num_frames < 1:
            raise ConfigError(f"--num-frames must be at least 1 (got {self.num_frames}).")
        if self.window < 0 or self.stride < 0:
            raise ConfigError("--window-seconds must be at least 0 and --window-stride more than 0.")
        if self.window and self.stride > self.window:
            raise ConfigError(
                f"--window-stride is longer than --window-seconds ({self.stride} > {self.window} frames): parts of the "
                "videos would fall between windows. Use a stride no longer than the window."
            )
        if self.padding not in PADDINGS:
            raise ConfigError(f"unknown padding {self.padding!r}: use one of {', '.join(PADDINGS)}.")

    @classmethod
    def from_seconds(
        cls, fps: float, num_frames: int, window_seconds: float | None, window_stride: float | None,
        padding: str = "zero",
    ) -> "TrackConfig":  # fmt: skip
        """Windows given in seconds (None: num_frames frames, the model's input at this rate; 0: whole videos),
        the stride in seconds (None: half a window), as `tcmgc extract` takes them."""
        if window_seconds is not None and window_seconds < 0:
            raise ConfigError(f"--window-seconds must be at least 0 (got {window_seconds:g}); 0 keeps whole videos.")
        if window_stride is not None and window_stride <= 0:
            raise ConfigError(f"--window-stride must be more than 0 (got {window_stride:g}).")
        if not fps > 0:
            raise ConfigError(f"--fps must be more than 0 (got {fps:g}): 1 is the reference's rate.")
        window = num_frames if window_seconds is None else max(1, round(window_seconds * fps)) if window_seconds else 0
        if window_stride is not None and window_seconds is not None and window_stride > window_seconds > 0:
            raise ConfigError(f"--window-stride {window_stride:g} is longer than --window-seconds {window_seconds:g}: "
                              "parts of the videos would fall between windows. Use a stride no longer than the window.")  # fmt: skip
        stride = 0 if window_stride is None or not window else min(window, max(1, round(window_stride * fps)))
        return cls(fps, num_frames, window, stride, padding)

    @property
    def step(self) -> int:
        """Frames between window starts."""
        return self.stride or max(1, self.window // 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SIMILARITIES = ("vs", "vw", "sf", "fw")  # video-sentence, video-word, sentence-frame, frame-word
# with phrases and snippets (the paper's open question 2): video-phrase, phrase-frame, snippet-sentence, snippet-word,
# snippet-phrase (c: the snippets' earlier name, clips, which weights and results files carry)
UNIT_SIMILARITIES = ("vp", "pf", "cs", "cw", "cp")
RENAMED = {"clips": "snippets", "clip_frames": "snippet_frames"}  # model keys of tcmgc 0.1 -> their names now
SDR_RULES = ("variance", "standardized")
AGGREGATIONS = ("lsa", "mean", "softmax")
KEEP_RULES = ("fixed", "mass")
ISA_FORMS = ("tcmgc", "xclip")
# a hierarchical interaction model (the paper's open question 3): words x units, merged phrases x merged clips,
# sentence x video, fed LVA's text-conditioned units or the temporal encoder's text-agnostic frames
HIERARCHY_SIMILARITIES = ("hw", "hp", "hs")
HIERARCHY_INPUTS = ("conditioned", "agnostic")


@dataclass(frozen=True)
class ModelConfig:
    """The TC-MGC head. Defaults are the method doc's (MSR-VTT, ViT-B/32); every component can be switched off."""

    embed_dim: int = 512  # D, joint embedding width (the CLIP towers' output)
    max_words: int = MAX_WORDS  # L (Nw), text tokens including start, end and padding
    num_frames: int = NUM_FRAMES  # T (Nf), frames per video
    temporal_layers: int = 4  # seqTransf depth
    temporal_heads: int = 8  # seqTransf heads (width D)
    temporal_positions: int = TEMPORAL_POSITIONS  # rows of the frame position table (CLIP's text context length)
    keep_rate: float = 0.1  # r in (0, 1]: SR keeps k = max(1, floor(n * r)) entries of a length-n vector
    keep_rule: str = "fixed"  # "fixed": always k; "mass": per vector, the fewest of those k whose share of the
    # vector's softmax(isa_lambda x) mass reaches keep_mass (the paper's open question: an input-dependent rate)
    keep_mass: float = 0.9  # p in (0, 1] for keep_rule "mass"
    reorganize: bool = True  # SR on; off: ISA runs over full-length vectors
    isa_lambda: float = 100.0  # sharpness of the softmaxes inside ISA
    isa_form: str = "tcmgc"  # "tcmgc": softmax-linear-softmax; "xclip": single softmax times matrix
    text_conditioning: bool = True  # LVA on; off: mean-pooled video and raw CLIP frames (the X-CLIP baseline)
    similarities: tuple[str, ...] = SIMILARITIES  # which of the four scores are used
    aggregation: str = "lsa"  # "lsa" (learned 4x4), "mean", or "softmax" (softmax-weighted average)
    lva_dropout: float = 0.3  # dropout inside LVA (training only; the factorized retrieval path has none)
    sdr_alpha: float = 0.5  # weight of the SDR variance loss
    sdr_rule: str = "variance"  # "variance": of the K scores of a positive pair (the paper); "standardized": of
    # the scores after standardizing each similarity over the batch's pairs (docs/method.md, section 16)
    phrases: bool = False  # text units between words and sentence: spans of phrase_words consecutive tokens
    phrase_words: int = 3
    snippets: bool = False  # video units between frames and video: windows of snippet_frames consecutive frames,
    snippet_frames: int = 3  # each pooled by LVA conditioned on the sentence
    hierarchy: bool = False  # add a hierarchical interaction model's three levels (docs/method.md, section 17)
    hierarchy_inputs: str = "conditioned"  # its video units: LVA's ("conditioned") or the temporal encoder's
    # frames and their mean ("agnostic")
    hierarchy_merge: int = 3  # each level above the first has ceil(n / hierarchy_merge) of the n units below
    mask_padding: bool = False  # mask padding words and padded frames (the reference does not)
    logit_scale_max: float = 100.0  # tau is clamped to at most this

    def __post_init__(self) -> None:
        if not 0 < self.keep_rate <= 1:
            raise ConfigError(f"model.keep_rate must be in (0, 1], got {self.keep_rate}.")
        if self.sdr_alpha < 0:
            raise ConfigError(f"model.sdr_alpha must be at least 0, got {self.sdr_alpha}.")
        unknown = [s for s in self.similarities if s not in SIMILARITIES]
        if unknown or not self.similarities:
            raise ConfigError(f"similarities must be a non-empty subset of {', '.join(SIMILARITIES)}; got {unknown}.")
        if self.sdr_rule not in SDR_RULES:
            raise ConfigError(f"unknown sdr_rule {self.sdr_rule!r}: use one of {', '.join(SDR_RULES)}.")
        if self.phrase_words < 1 or self.snippet_frames < 1:
            raise ConfigError("model.phrase_words and model.snippet_frames must be at least 1.")
        if self.hierarchy_merge < 2:
            raise ConfigError(f"model.hierarchy_merge must be at least 2 (got {self.hierarchy_merge}).")
        if self.hierarchy_inputs not in HIERARCHY_INPUTS:
            raise ConfigError(f"unknown model.hierarchy_inputs {self.hierarchy_inputs!r}: use one of "
                              f"{', '.join(HIERARCHY_INPUTS)}.")  # fmt: skip
        if self.hierarchy and self.hierarchy_inputs == "conditioned" and not self.text_conditioning:
            raise ConfigError("model.hierarchy_inputs=conditioned needs LVA (model.text_conditioning=true); "
                              "use model.hierarchy_inputs=agnostic without it.")  # fmt: skip
        if self.keep_rule not in KEEP_RULES or not 0 < self.keep_mass <= 1:
            raise ConfigError(f"keep_rule must be one of {', '.join(KEEP_RULES)} and keep_mass in (0, 1].")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {self.aggregation!r}: use one of {', '.join(AGGREGATIONS)}.")
        if self.isa_form not in ISA_FORMS:
            raise ConfigError(f"unknown ISA form {self.isa_form!r}: use one of {', '.join(ISA_FORMS)}.")
        if self.num_frames > self.temporal_positions:
            raise ConfigError(f"num_frames {self.num_frames} exceeds the {self.temporal_positions} frame positions.")
        if self.embed_dim % self.temporal_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by temporal_heads {self.temporal_heads}.")

    @property
    def num_units(self) -> int:
        """Fine-grained visual units per pair: Nw word-conditioned frames, or T raw frames without LVA."""
        return self.max_words if self.text_conditioning else self.num_frames

    @property
    def num_phrases(self) -> int:
        """P: text spans of phrase_words tokens over the max_words positions."""
        return math.ceil(self.max_words / self.phrase_words)

    @property
    def num_snippets(self) -> int:
        """C: windows of snippet_frames frames over the num_frames slots."""
        return math.ceil(self.num_frames / self.snippet_frames)

    @property
    def hierarchy_units(self) -> int:
        """The hierarchy's first-level video units: Nw word-conditioned pools, or T frames (agnostic)."""
        return self.max_words if self.hierarchy_inputs == "conditioned" else self.num_frames

    @property
    def active_similarities(self) -> tuple[str, ...]:
        """The scores a pair gets: the configured ones, and those phrases, snippets and the hierarchy add."""
        extra = (("vp", "pf") if self.phrases else ()) + (("cs", "cw") if self.snippets else ())
        both = ("cp",) if self.phrases and self.snippets else ()
        return (*self.similarities, *extra, *both, *(HIERARCHY_SIMILARITIES if self.hierarchy else ()))

    def kept(self, n: int) -> int:
        """Entries SR keeps of a length-n vector."""
        return max(1, math.floor(n * self.keep_rate)) if self.reorganize else n

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["similarities"] = list(self.similarities)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = {RENAMED.get(k, k): v for k, v in data.items()}  # configs and checkpoints of earlier versions
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown model config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}."
            )
        data = dict(data)
        if "similarities" in data:
            data["similarities"] = tuple(data["similarities"])
        return cls(**data)

    def xclip(self) -> "ModelConfig":
        """The method doc's reduction to X-CLIP: no LVA, no SR, single-softmax ISA, plain average, no SDR."""
        return replace(
            self, text_conditioning=False, reorganize=False, isa_form="xclip", aggregation="mean", sdr_alpha=0.0
        )


OPTIMIZERS = ("bert", "adamw")
FREEZE = ("none", "visual", "all")


@dataclass(frozen=True)
class TrainConfig:
    """The reference recipe (method doc, section 10) as defaults; a model config's "train" section adjusts them."""

    epochs: int = 5
    batch_size: int = 128  # global batch, split across processes
    lr: float = 1e-4  # new modules (temporal encoder, LVA, G, L, ISA, LSA)
    clip_lr_scale: float = 1e-3  # CLIP's parameters train at lr * this
    warmup: float = 0.1  # fraction of steps with a linear warm-up; then cosine over the whole run
    weight_decay: float = 0.2
    optimizer: str = "bert"  # "bert": the reference's Adam (no bias correction, per-tensor clip); "adamw": torch AdamW
    grad_clip: float = 1.0  # global gradient-norm clip
    accumulate: int = 1  # batches per optimizer step
    freeze: str = "none"  # "none": fine-tune CLIP end to end (cache needs frames); "visual"; "all" (--freeze-backbone)
    seed: int = 42
    eval_chunk: int = 64  # texts and videos per scoring block
    expand_captions: bool = True  # every caption is a sample (the reference); False: one caption per video per epoch
    precision: str = "auto"  # "fp32", "bf16" (autocast, CPU or CUDA), or "auto": the faster here (precision.py)
    log_every: int = 10  # steps between metrics-log lines

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: use {' or '.join(OPTIMIZERS)}.")
        if self.freeze not in FREEZE:
            raise ConfigError(f"unknown freeze {self.freeze!r}: use one of {', '.join(FREEZE)}.")
        for flag, value, least in (("--epochs (train.epochs)", self.epochs, 1),
                                   ("--batch-size (train.batch_size)", self.batch_size, 2),
                                   ("train.accumulate", self.accumulate, 1), ("train.log_every", self.log_every, 1),
                                   ("train.eval_chunk", self.eval_chunk, 1)):  # fmt: skip
            if value < least:
                raise ConfigError(f"{flag} must be at least {least} (got {value}).")
        if not self.lr > 0:
            raise ConfigError(f"--lr (train.lr) must be more than 0 (got {self.lr:g}).")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"train.warmup must be in [0, 1) (got {self.warmup:g}).")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}: use auto, fp32 or bf16.")


def _parse_value(raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"expected true or false, got {raw!r}.")
        return raw.lower() in ("true", "1")
    if isinstance(current, tuple):
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    try:
        return type(current)(raw)
    except ValueError:
        raise ConfigError(f"expected a {type(current).__name__}, got {raw!r}.") from None


def apply_overrides(
    model: dict[str, Any], train: dict[str, Any], toml_path: "os.PathLike[str] | None", sets: list[str]
) -> tuple[dict[str, Any], TrainConfig]:
    """Merge, in this order: registry defaults -> `--config run.toml` ([model], [train]) -> `--set section.key=value`.

    Unknown sections or keys are errors listing the valid ones. Returns model overrides and the TrainConfig.
    """
    import tomllib
    from pathlib import Path

    model, train = dict(model), dict(train)
    sections = {"model": (model, {f.name: f.default for f in fields(ModelConfig)}),
                "train": (train, {f.name: f.default for f in fields(TrainConfig)})}  # fmt: skip
    if toml_path is not None:
        try:
            data = tomllib.loads(Path(toml_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read --config {toml_path}: {err}") from err
        for name, table in data.items():
            if name not in sections or not isinstance(table, dict):
                raise ConfigError(f"{toml_path}: unknown table [{name}]; use [model] and [train].")
            for raw_key, value in table.items():
                key = RENAMED.get(str(raw_key), str(raw_key)) if name == "model" else str(raw_key)
                _check_key(name, key, sections[name][1])
                sections[name][0][key] = tuple(value) if isinstance(value, list) else value
    for item in sets:
        path, sep, raw = item.partition("=")
        name, dot, key = path.strip().partition(".")
        if not sep or not dot or name not in sections:
            raise ConfigError(f"--set {item!r}: write it as model.KEY=VALUE or train.KEY=VALUE.")
        key = RENAMED.get(key, key) if name == "model" else key
        _check_key(name, key, sections[name][1])
        target, defaults = sections[name]
        target[key] = _parse_value(raw.strip(), target.get(key, defaults[key]))
    return model, TrainConfig(**train)


def _check_key(section: str, key: str, valid: dict[str, Any]) -> None:
    if key not in valid:
        raise ConfigError(f"unknown {section} key {key!r}; valid keys: {', '.join(sorted(valid))}.")

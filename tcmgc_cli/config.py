"""Torch-free configuration dataclasses, so that the CLI can parse and validate without loading torch."""

from dataclasses import asdict, dataclass
from typing import Any

from tcmgc_cli.errors import ConfigError

SAMPLING_STRATEGIES = ("uniform", "fps")


@dataclass(frozen=True)
class SamplingConfig:
    """How frames are chosen from a video."""

    num_frames: int = 12  # frames kept per video (Nf); 12 for MSR-VTT/VATEX in the method doc
    strategy: str = "uniform"  # "uniform": Nf frames spread over the whole video; "fps": the reference's 1-fps way
    fps: float = 1.0  # frames per second decoded before spreading, with strategy "fps"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"--num-frames must be at least 1 (got {self.num_frames}).")
        if self.strategy not in SAMPLING_STRATEGIES:
            raise ConfigError(f"unknown sampling {self.strategy!r}: use one of {', '.join(SAMPLING_STRATEGIES)}.")
        if self.fps <= 0:
            raise ConfigError(f"--fps must be positive (got {self.fps}).")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

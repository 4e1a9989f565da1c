"""`tcmgc evaluate` as a library call: retrieval metrics of a checkpoint on a dataset split.

from tcmgc_cli.evaluate import evaluate
metrics = evaluate(DataSource("msrvtt", Path("MSRVTT")))  # the newest run's best checkpoint, 1k-A test
metrics["t2v_R@1"]
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tcmgc_cli.data.source import DataSource
from tcmgc_cli.distributed import Dist
from tcmgc_cli.errors import ConfigError
from tcmgc_cli.scoring import measure_split, open_trained


def evaluate(
    source: DataSource, checkpoint: Path | None = None, *, split: str = "test", cache: Path | None = None,
    dsl: bool = False, chunk: int = 64, save_scores: Path | None = None, device: str = "auto",
    on_progress: Callable[[int, int], None] | None = None, precision: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """Retrieval metrics (`metrics.METRIC_KEYS`, ties, `num_queries`, `num_videos`, `pairs_per_s`, `checkpoint`)
    of a checkpoint on one split. Under torchrun every process scores a share and gets the same result."""
    if chunk < 1:
        raise ConfigError("--chunk must be at least 1.")
    trained, features, where = open_trained(checkpoint, cache, device, precision)
    data = source.split(split, features)
    dist = Dist.from_env(trained.device)
    scores, metrics = measure_split(trained, features, data, chunk, dsl=dsl, variance=False,
                                    on_progress=on_progress, dist=dist)  # fmt: skip
    if save_scores is not None and dist.rank == 0:
        np.savez_compressed(save_scores, scores=scores, video_ids=np.array(data.video_ids), captions=np.array(data.captions),
                            caption_video=np.array(data.caption_video))  # fmt: skip
    metrics["checkpoint"] = str(where)
    metrics["precision"] = trained.precision
    return metrics

"""A dataset as a run names it (layout, folder, files) and its splits, checked against the videos a cache holds."""

import logging
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from tcmgc_cli.data.annotations import Split, load_split
from tcmgc_cli.errors import AnnotationError, CacheError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """Where the captions come from: `dataset` msrvtt|didemo|vatex in the reference layout under `data_root`, or
    csv with `annotations` (video_id,caption[,split])."""

    dataset: str = "msrvtt"
    data_root: Path | None = None
    annotations: Path | None = None
    train_list: str = "9k"  # MSR-VTT training list: 9k or 7k
    skip_missing: bool = False  # go on without videos that have no cached features

    def split(self, name: str, cached: Container[str], cache: Path) -> Split:
        """Split `name`, whose videos must all be `cached` (or, with skip_missing, only those that are); `cache`
        names where, for the message."""
        data = load_split(self.dataset, self.data_root, name, self.annotations, self.train_list)
        missing = [v for v in data.video_ids if v not in cached]
        if missing and not self.skip_missing:
            raise CacheError(missing_message(missing, len(data.video_ids), cache))
        if missing:
            log.warning("Skipping %d videos without features (first: %s).", len(missing), ", ".join(missing[:3]))
            data = data.restrict({v for v in data.video_ids if v in cached})
        if not data.captions:
            raise CacheError(f"{data.summary()}: nothing left to use.")
        log.info(data.summary())
        return data

    def validation_split(self, cached: Container[str], cache: Path) -> Split | None:
        """The split the reference validates on: MSR-VTT's 1k-A test set; val where a dataset has one, else test."""
        for name in ("test",) if self.dataset == "msrvtt" else ("val", "test"):
            try:
                if not load_split(self.dataset, self.data_root, name, self.annotations).captions:
                    continue
            except AnnotationError:
                continue
            return self.split(name, cached, cache)
        log.info("No validation split: every epoch's checkpoint counts as the best.")
        return None


def missing_message(missing: list[str], total: int, cache: Path) -> str:
    return (f"{len(missing)} of {total} videos have no features in {cache} (first: {', '.join(missing[:5])}). "
            "Run `tcmgc extract` for them, or pass --skip-missing to go on without them.")  # fmt: skip

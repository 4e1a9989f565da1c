"""Extraction: videos into the cache, each decoded once at the track rate and each frame encoded once.

scan (`scan.py`: the folder's videos by id) -> decode (`decode.py`: worker processes) -> encode and write
(`pipeline.py`: the image tower on blocks of frames, one atomic cache segment per batch of videos). The library
calls are `folder.py`'s; `ExtractOptions` (torch-free, in `config.py`) says how.

    report = extract_folder(Path("my_videos"), pretrained="ViT-B-32.pt")  # the default model, weights from a file
"""

from tcmgc_cli.extract.folder import extract_dataset, extract_folder
from tcmgc_cli.extract.pipeline import ExtractReport, extract
from tcmgc_cli.extract.scan import Failure, VideoJob, files_gone, plan_jobs, scan_folder
from tcmgc_cli.options import ExtractOptions

__all__ = [
    "ExtractOptions", "ExtractReport", "Failure", "VideoJob", "extract", "extract_dataset", "extract_folder",
    "files_gone", "plan_jobs", "scan_folder",
]  # fmt: skip

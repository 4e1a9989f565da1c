"""Annotation files as the reference code reads them. The only module that imports pandas for datasets."""

import json
from pathlib import Path

import pandas as pd

from tcmgc_cli.errors import AnnotationError

MSRVTT_VIDEO_DIRS = ("videos", "MSRVTT_Videos", "all")
MSRVTT_ID_FILES = ("MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv")


def read_csv_checked(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a comma-separated file with a header, insisting on `required` columns; names the problem if not."""
    if not path.is_file():
        raise AnnotationError(f"{path} does not exist: check --data-root / --annotations.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path} is not a readable CSV file ({err}).") from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns))
        hint = " It looks semicolon-separated: save it with commas." if len(df.columns) == 1 and ";" in found else ""
        raise AnnotationError(f"{path.name} is missing column {', '.join(map(repr, missing))} (found: {found}).{hint}")
    return df


def read_id_list(path: Path) -> list[str]:
    """Video ids listed in a CSV with a `video_id` column (MSR-VTT split lists, the 1k-A test file, custom CSVs)."""
    ids = read_csv_checked(path, ("video_id",))["video_id"].str.strip()
    return list(dict.fromkeys(i for i in ids if i))


def msrvtt_videos(root: Path) -> tuple[Path, list[str]]:
    """The videos folder of an MSR-VTT data root and every video id its annotation files name."""
    if not root.is_dir():
        raise AnnotationError(f"--data-root {root} is not a folder.")
    folder = next((root / d for d in MSRVTT_VIDEO_DIRS if (root / d).is_dir()), None)
    if folder is None:
        raise AnnotationError(f"{root} has no videos folder: expected one of {', '.join(MSRVTT_VIDEO_DIRS)}/.")
    data_json = root / "MSRVTT_data.json"
    if data_json.is_file():
        try:
            videos = json.loads(data_json.read_text())["videos"]
            return folder, list(dict.fromkeys(str(v["video_id"]) for v in videos))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise AnnotationError(f"{data_json} is not an MSR-VTT data file (need videos[].video_id): {err}") from err
    lists = [root / name for name in MSRVTT_ID_FILES if (root / name).is_file()]
    if not lists:
        raise AnnotationError(f"{root} has neither MSRVTT_data.json nor any of {', '.join(MSRVTT_ID_FILES)}.")
    return folder, list(dict.fromkeys(i for p in lists for i in read_id_list(p)))

"""Rebuild sample_data/ bit for bit: a tiny synthetic dataset laid out exactly like the MSR-VTT release.

120 clips (64x64, 4 fps, 2-4 s) of one coloured shape at a time moving on a dark background. Each clip has 2-3
consecutive events ("a red circle moves left", then "a blue square moves up", ...). Captions (never with a comma: the
1k-A test file has no quoting) describe either the whole clip or one event, so matching words to the right
frames pays off.

Layout written (as CLIP4Clip's msrvtt_data.zip plus videos/):
    msrvtt/MSRVTT_data.json         videos[] and sentences[] (10 captions per video)
    msrvtt/MSRVTT_train.9k.csv      video0..video89
    msrvtt/MSRVTT_train.7k.csv      video0..video79
    msrvtt/MSRVTT_JSFUSION_test.csv video90..video119, one caption each, shuffled like the real file
    msrvtt/videos/video<N>.mp4      H.264 RGB lossless (libx264rgb, crf 0)
    captions.csv                    every caption as a custom dataset: video_id,caption,split,kind (clip|event)
    event_captions.csv              only the event-level captions: video_id,caption,split
    long/videos/long<N>.mp4         3 long videos: the 30 test clips joined end to end, shuffled, 10 to a video
    long/moments.jsonl              their test captions as moment queries, in QVHighlights' format
    didemo/                         36 videos of 3-4 events in the DiDeMo layout (CLIP4Clip's): {train,val,test}_data.json
                                    and {train,val,test}_list.txt, videos/ with DiDeMo's mixed extensions
    vatex/                          36 clips in the VATEX layout: ref_captions.json, {train,val,test}_list.txt, videos/

Run: python sample_data/make_sample_data.py   (needs numpy and av; seeded, single-threaded encoder)
"""

import csv
import json
from pathlib import Path

import av
import numpy as np

SEED = 2504
NUM_VIDEOS, NUM_TRAIN_9K, NUM_TRAIN_7K, NUM_OFFICIAL_TRAIN = 120, 90, 80, 70
SIZE, FPS = 64, 4
COLORS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
    "yellow": (240, 220, 40), "purple": (170, 60, 220), "white": (245, 245, 245),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
EVENT_TEMPLATES = ("a {c} {s} moves {m}", "a {c} {s} is moving {m}", "the {c} {s} goes {m}")
BACKGROUND = (24, 24, 32)
HERE = Path(__file__).parent


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    if shape == "circle":
        return np.asarray((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)
    if shape == "square":
        return np.asarray((abs(xx - cx) <= r * 0.85) & (abs(yy - cy) <= r * 0.85))
    top, bottom = cy - r, cy + r  # triangle pointing up
    half_width = (yy - top) / (2 * r) * r
    return np.asarray((yy >= top) & (yy <= bottom) & (abs(xx - cx) <= half_width))


def render_event(event: tuple[str, str, str], frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    color, shape, motion = event
    dx, dy = MOTIONS[motion]
    r = float(rng.uniform(7, 10))
    travel = SIZE - 2 * r - 8
    start = rng.uniform(r + 4, SIZE - r - 4, size=2)
    start[0] = SIZE / 2 - dx * travel / 2 if dx else start[0]
    start[1] = SIZE / 2 - dy * travel / 2 if dy else start[1]
    out = []
    for i in range(frames):
        p = i / max(frames - 1, 1)
        img = np.empty((SIZE, SIZE, 3), np.uint8)
        img[:] = BACKGROUND
        img[shape_mask(shape, start[0] + dx * travel * p, start[1] + dy * travel * p, r)] = COLORS[color]
        out.append(img)
    return out


def pick_events(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    colors = rng.choice(list(COLORS), size=3, replace=False)
    events = [(str(c), str(rng.choice(SHAPES)), str(rng.choice(list(MOTIONS)))) for c in colors]
    return events[: int(rng.integers(2, 4))]


def captions_for(events: list[tuple[str, str, str]], rng: np.random.Generator) -> list[tuple[str, str]]:
    parts = [f"a {c} {s} moves {m}" for c, s, m in events]
    clip = [
        " then ".join(parts),
        " and then ".join(parts),
        "first " + " and after that ".join(parts),
        f"{len(events)} shapes move one after another: " + " and ".join(f"{c} {s}" for c, s, _ in events),
    ]
    caps = [(c, "clip") for c in clip]
    while len(caps) < 10:
        c, s, m = events[len(caps) % len(events)]
        template = EVENT_TEMPLATES[int(rng.integers(len(EVENT_TEMPLATES)))]
        caps.append((template.format(c=c, s=s, m=m), "event"))
    return caps


def write_video(path: Path, frames: list[np.ndarray], container_format: str | None = None) -> None:
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264rgb", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "rgb24"
        stream.options = {"crf": "0", "threads": "1"}
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())


def write_long_videos(clips: dict[str, list[np.ndarray]], captions: dict[str, str], per_video: int = 10) -> None:
    """The test clips joined end to end in a shuffled order, `per_video` to a video, and one moment query per clip
    (its 1k-A test caption; its true window is where the clip lies in the long video)."""
    rng = np.random.default_rng(SEED + 1)  # its own stream: the clips above stay bit for bit the same
    order = [list(clips)[i] for i in rng.permutation(len(clips))]
    folder = HERE / "long"
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for n in range(0, len(order), per_video):
        name, frames, at = f"long{n // per_video}", [], 0
        windows = []
        for vid in order[n : n + per_video]:
            windows.append((vid, at / FPS, (at + len(clips[vid])) / FPS))
            frames += clips[vid]
            at += len(clips[vid])
        write_video(folder / "videos" / f"{name}.mp4", frames)
        for vid, start, end in windows:
            query = {"qid": len(lines), "query": captions[vid], "vid": name, "duration": at / FPS,
                     "relevant_windows": [[start, end]], "clip": vid}  # fmt: skip
            lines.append(json.dumps(query))
    (folder / "moments.jsonl").write_text("\n".join(lines) + "\n")


def official_split(n: int) -> str:
    return "train" if n < NUM_OFFICIAL_TRAIN else "validate" if n < NUM_TRAIN_7K else "test"


def main() -> None:
    rng = np.random.default_rng(SEED)
    root = HERE / "msrvtt"
    (root / "videos").mkdir(parents=True, exist_ok=True)
    videos, sentences, rows = [], [], []
    test_frames: dict[str, list[np.ndarray]] = {}
    for n in range(NUM_VIDEOS):
        vid = f"video{n}"
        events = pick_events(rng)
        seconds = int(rng.integers(2, 5))
        per_event = np.array_split(np.arange(seconds * FPS), len(events))
        frames = [f for ev, idx in zip(events, per_event, strict=True) for f in render_event(ev, len(idx), rng)]
        write_video(root / "videos" / f"{vid}.mp4", frames)
        if n >= NUM_TRAIN_9K:
            test_frames[vid] = frames
        videos.append({"category": 0, "url": "synthetic", "video_id": vid, "start time": 0.0,
                       "end time": float(seconds), "split": official_split(n), "id": n})  # fmt: skip
        for caption, kind in captions_for(events, rng):
            sentences.append({"caption": caption, "video_id": vid, "sen_id": len(sentences)})
            rows.append((vid, caption, "train" if n < NUM_TRAIN_9K else "test", kind))
    data = {"info": {"description": "tcmgc synthetic sample, MSR-VTT layout"}, "videos": videos, "sentences": sentences}
    (root / "MSRVTT_data.json").write_text(json.dumps(data, indent=None) + "\n")
    for name, count in (("MSRVTT_train.9k.csv", NUM_TRAIN_9K), ("MSRVTT_train.7k.csv", NUM_TRAIN_7K)):
        (root / name).write_text("video_id\n" + "".join(f"video{i}\n" for i in range(count)))
    test_ids = list(range(NUM_TRAIN_9K, NUM_VIDEOS))
    order = rng.permutation(len(test_ids))
    lines = ["key,vid_key,video_id,sentence"]
    test_captions: dict[str, str] = {}
    for key, pos in enumerate(order):
        n = test_ids[pos]
        caps = [s["caption"] for s in sentences if s["video_id"] == f"video{n}"]
        test_captions[f"video{n}"] = caps[int(rng.integers(len(caps)))]
        lines.append(f"ret{key},msr{n},video{n},{test_captions[f'video{n}']}")
    (root / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(lines) + "\n")
    with open(HERE / "captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("video_id", "caption", "split", "kind"))
        writer.writerows(rows)
    with open(HERE / "event_captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("video_id", "caption", "split"))
        writer.writerows(r[:3] for r in rows if r[3] == "event")
    write_long_videos(test_frames, test_captions)


DIDEMO_EXTENSIONS = (".mp4", ".mov", ".mp4", ".avi", "")  # DiDeMo's names: mixed extensions, some a bare "."
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".avi": "avi", "": "mp4"}


def render(events: list[tuple[str, str, str]], frames: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Events one after another, each over its number of frames."""
    return [f for ev, n in zip(events, frames, strict=True) for f in render_event(ev, n, rng)]


def write_didemo(count: int = 36) -> None:
    """DiDeMo's layout: per split a list of exact file names and a json of one description per event; retrieval
    joins a video's descriptions into one paragraph. Events of 2-3 s, so a video holds 6-12 s (5-second chunks)."""
    rng = np.random.default_rng(SEED + 2)  # a stream of its own: the files above stay bit for bit the same
    root = HERE / "didemo"
    (root / "videos").mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": [], "test": []}
    data: dict[str, list[dict[str, object]]] = {name: [] for name in splits}
    for n in range(count):
        ext = DIDEMO_EXTENSIONS[n % len(DIDEMO_EXTENSIONS)]
        name = f"{1000 + n}@N0{n % 9}_{800000 + 37 * n}_{n * 7919 % 65536:04x}" + (ext or ".")
        events = pick_events(rng) + pick_events(rng)[:1]
        seconds = [int(rng.integers(2, 4)) for _ in events]
        write_video(root / "videos" / name, render(events, [x * FPS for x in seconds], rng), CONTAINERS[ext])
        split = "train" if n < 24 else "val" if n < 30 else "test"
        splits[split].append(name)
        at = 0
        for (c, s, m), length in zip(events, seconds, strict=True):
            template = EVENT_TEMPLATES[int(rng.integers(len(EVENT_TEMPLATES)))]
            data[split].append({"num_segments": -(-sum(seconds) // 5), "description": template.format(c=c, s=s, m=m),
                                "dl_link": "synthetic", "times": [[at // 5, (at + length - 1) // 5]] * 4,
                                "video": name, "annotation_id": len([a for d in data.values() for a in d])})  # fmt: skip
            at += length
    for split, names in splits.items():
        (root / f"{split}_list.txt").write_text("".join(f"{x}\n" for x in names))
        (root / f"{split}_data.json").write_text(json.dumps(data[split]) + "\n")


def write_vatex(count: int = 36) -> None:
    """VATEX's layout: ref_captions.json ({id: [10 captions]}) and per split a list of ids; every caption of a test
    video is a query."""
    rng = np.random.default_rng(SEED + 3)
    root = HERE / "vatex"
    (root / "videos").mkdir(parents=True, exist_ok=True)
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for n in range(count):
        events = pick_events(rng)
        seconds = int(rng.integers(2, 5))
        vid = f"synthetic{n:03d}vtx_{5 * n:06d}_{5 * n + seconds:06d}"
        per_event = [len(i) for i in np.array_split(np.arange(seconds * FPS), len(events))]
        write_video(root / "videos" / f"{vid}.mp4", render(events, per_event, rng))
        captions[vid] = [c for c, _ in captions_for(events, rng)]
        splits["train" if n < 24 else "val" if n < 30 else "test"].append(vid)
    (root / "ref_captions.json").write_text(json.dumps(captions) + "\n")
    for split, ids in splits.items():
        (root / f"{split}_list.txt").write_text("".join(f"{x}\n" for x in ids))


if __name__ == "__main__":
    main()
    write_didemo()
    write_vatex()

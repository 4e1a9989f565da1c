"""One command for a machine with a GPU: run the CUDA paths and check them against the CPU.

    python benchmarks/gpu_check.py                 # on a GPU machine (under 5 minutes on one H100)
    python benchmarks/gpu_check.py --device cpu    # the same steps on the CPU (a smoke test of this script)

Steps, each compared with the CPU where the two must agree:
1. extract sample_data/ with tcmgc-tiny on the device (fp32 and bf16 autocast) -> frame features vs CPU's;
2. train a few epochs on the device in fp32 and in bf16 -> fp32 losses vs CPU's, bf16 losses finite and close;
3. evaluate the fp32 run on the device -> the same metrics as on the CPU;
4. scoring at ViT-B/32 sizes (synthetic, 1,000 x 1,000): X-CLIP-style vs TC-MGC (factorized) on the device, with
   the device's scores against the CPU's on a 64 x 64 corner;
5. image towers a user picks (ViT-B-32, MobileCLIP2-S0, ViT-B-16-SigLIP2, random weights): frames/s in fp32 and
   bf16 on the device, each one's features against the CPU's fp32 (cosine), and what `--precision auto` takes;
6. a 2-minute 1280x720 video extracted with ViT-B-32 (random weights, bf16) on the device, its stretches decoded by
   the default decoder processes and then in the extracting process: seconds of video a second each, and the same
   track from both.
Needs only the project's own dependencies. The last line printed is one JSON object with every figure.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SAMPLE = ROOT / "sample_data" / "msrvtt"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def check_extract(device: str, work: Path) -> dict[str, Any]:
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.extract import extract_folder

    out: dict[str, Any] = {}
    caches = {}
    for name, dev, precision in (("cpu", "cpu", "fp32"), ("fp32", device, "fp32"), ("bf16", device, "bf16")):
        path = work / f"extract-{name}.h5"
        start = time.perf_counter()
        report = extract_folder(SAMPLE / "videos", "tcmgc-tiny", cache=path, device=dev, precision=precision, workers=4)
        out[f"extract_{name}_videos_per_s"] = round(len(report.extracted) / (time.perf_counter() - start), 1)
        caches[name] = FeatureCache(path)
    ids = caches["cpu"].ids()
    ref = caches["cpu"].entry_inputs(ids)[0]
    for name in ("fp32", "bf16"):
        got = caches[name].entry_inputs(ids)[0]
        out[f"extract_{name}_max_rel_diff"] = float(np.abs(got - ref).max() / np.abs(ref).max())
    out["extract_fp32_agrees"] = out["extract_fp32_max_rel_diff"] < 1e-3
    out["extract_bf16_agrees"] = out["extract_bf16_max_rel_diff"] < 5e-2
    return out


def check_train_evaluate(device: str, work: Path) -> dict[str, Any]:
    from tcmgc_cli.data.source import DataSource
    from tcmgc_cli.evaluation.retrieval import evaluate
    from tcmgc_cli.training import train

    data, cache = DataSource("msrvtt", SAMPLE), work / "extract-cpu.h5"
    out: dict[str, Any] = {}
    losses: dict[str, list[float]] = {}
    runs = {}
    for name, dev, precision in (("cpu", "cpu", "fp32"), ("fp32", device, "fp32"), ("bf16", device, "bf16")):
        steps: list[float] = []
        start = time.perf_counter()
        result = train(data, "tcmgc-tiny", output=work / f"run-{name}", cache=cache, epochs=3, device=dev,
                       sets=[f"train.precision={precision}", "model.lva_dropout=0"],
                       on_event=lambda e, s=steps: e["kind"] == "step" and s.append(e["loss"]))  # fmt: skip
        out[f"train_{name}_s"] = round(time.perf_counter() - start, 2)
        losses[name], runs[name] = steps, result.run
    ref = np.array(losses["cpu"])
    for name in ("fp32", "bf16"):
        got = np.array(losses[name])
        out[f"train_{name}_loss_max_rel_diff"] = float(np.abs(got - ref).max() / np.abs(ref).max())
        out[f"train_{name}_finite"] = bool(np.isfinite(got).all())
    out["train_fp32_agrees"] = out["train_fp32_loss_max_rel_diff"] < 1e-2
    out["train_bf16_agrees"] = out["train_bf16_finite"] and out["train_bf16_loss_max_rel_diff"] < 0.1
    on_cpu = evaluate(data, runs["fp32"], cache=cache, device="cpu")
    on_device = evaluate(data, runs["fp32"], cache=cache, device=device)
    keys = ("t2v_R@1", "t2v_R@5", "t2v_MnR", "v2t_R@1")
    out["evaluate_metrics_device"] = {k: on_device[k] for k in keys}
    out["evaluate_agrees"] = all(abs(on_device[k] - on_cpu[k]) <= 1e-6 for k in keys)
    out["evaluate_pairs_per_s"] = round(on_device["pairs_per_s"])
    return out


def check_scoring(device: str, n: int) -> dict[str, Any]:
    from _common import LogitScaleOnly

    from tcmgc_cli.config import ModelConfig
    from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures

    d, t, length = 512, 12, 32
    g = torch.Generator().manual_seed(0)
    words = torch.randn(n, length, d, generator=g)
    sentence, frames = words[:, 5] + 0.1 * torch.randn(n, d, generator=g), torch.randn(n, t, d, generator=g)
    cfg = ModelConfig(embed_dim=d, max_words=length, num_frames=t)
    out: dict[str, Any] = {}
    corner = {}
    for name, c in (("xclip", cfg.xclip()), ("ours", cfg)):
        torch.manual_seed(0)
        model = TcmgcModel(c, LogitScaleOnly()).eval()
        for dev in ("cpu", device):
            m = model.to(dev)
            text = TextFeatures(words[:64].to(dev), sentence[:64].to(dev))
            with torch.no_grad():
                video = m.encode_video(frames[:64].to(dev), factorized=True)
                corner[(name, dev)] = m.score_chunked(text, video)["logits"].cpu()
        m = model.to(device)
        text = TextFeatures(words.to(device), sentence.to(device))
        with torch.no_grad():
            video = m.encode_video(frames.to(device), factorized=True)
            m.score_chunked(text.select(slice(0, 64)), video.select(slice(0, 64)))  # warm-up
            _sync(device)
            start = time.perf_counter()
            m.score_chunked(text, video)
            _sync(device)
        out[f"scoring_{name}_s"] = round(time.perf_counter() - start, 3)
        ref, got = corner[(name, "cpu")], corner[(name, device)]
        out[f"scoring_{name}_max_rel_diff_vs_cpu"] = float((got - ref).abs().max() / ref.abs().max())
    out["scoring_size"] = n
    out["scoring_ratio_vs_xclip"] = round(out["scoring_ours_s"] / out["scoring_xclip_s"], 3)
    out["scoring_agrees"] = all(out[f"scoring_{k}_max_rel_diff_vs_cpu"] < 1e-3 for k in ("xclip", "ours"))
    return out


def check_models(device: str, frames: int = 64) -> dict[str, Any]:
    from tcmgc_cli.model.encoder import FrameEncoder

    out: dict[str, Any] = {}
    for name in ("ViT-B-32-quickgelu", "MobileCLIP2-S0", "ViT-B-16-SigLIP2"):
        ref = FrameEncoder.load(name, None, "cpu", "fp32")
        x = torch.randint(0, 256, (frames, ref.preprocess.size, ref.preprocess.size, 3), dtype=torch.uint8)
        want = ref(x[:8])
        for precision in ("fp32", "bf16"):
            enc = FrameEncoder.load(name, None, device, precision)
            enc(x[:8])  # warm-up
            _sync(device)
            start = time.perf_counter()
            enc(x)
            _sync(device)
            out[f"{name}_{precision}_frames_per_s"] = round(frames / (time.perf_counter() - start), 1)
            cos = torch.nn.functional.cosine_similarity(enc(x[:8]), want, dim=-1).min()
            out[f"{name}_{precision}_min_cosine_vs_cpu"] = round(float(cos), 6)
        out[f"{name}_auto"] = FrameEncoder.load(name, None, device, "auto").precision
    out["models_agree"] = all(v >= 0.999 for k, v in out.items() if k.endswith("_min_cosine_vs_cpu"))
    return out


def check_long_extract(device: str, work: Path, seconds: int = 120) -> dict[str, Any]:
    from long_video import make_video

    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.extract import extract_folder
    from tcmgc_cli.options import ExtractOptions

    (work / "long").mkdir()
    make_video(work / "long" / "long.mp4", seconds, 1280, 720)
    out: dict[str, Any] = {"long_decoders": ExtractOptions().decoders(gpu=device.startswith("cuda"))}
    tracks = []
    for name, workers in (("processes", None), ("in_process", 0)):
        path = work / f"long-{name}.h5"
        report = extract_folder(work / "long", "ViT-B-32-quickgelu", cache=path, pretrained="none", device=device,
                                precision="bf16", workers=workers)  # fmt: skip
        out[f"long_{name}_video_s_per_s"] = round(report.video_seconds / report.wall_s, 1)
        tracks.append(FeatureCache(path).track("long"))
    (times_a, feats_a), (times_b, feats_b) = tracks
    out["long_tracks_agrees"] = bool(np.array_equal(times_a, times_b) and np.allclose(feats_a, feats_b, atol=1e-2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the device to check against the CPU (default: cuda)")
    parser.add_argument("--scoring-size", type=int, default=1000, help="texts = videos in the scoring step")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU is visible: run on a GPU machine, or pass --device cpu for a smoke test")
    summary: dict[str, Any] = {"benchmark": "gpu_check", "device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TCMGC_WORKSPACE"] = tmp
        work = Path(tmp)
        for step in (check_extract, check_train_evaluate):
            summary.update(step(args.device, work))
            print(json.dumps(summary), flush=True)
    summary.update(check_scoring(args.device, args.scoring_size))
    print(json.dumps(summary), flush=True)
    summary.update(check_models(args.device))
    print(json.dumps(summary), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        summary.update(check_long_extract(args.device, Path(tmp)))
    summary["all_agree"] = all(v for k, v in summary.items() if k.endswith("agrees"))
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

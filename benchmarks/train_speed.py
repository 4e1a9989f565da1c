"""CPU training speed over the epochs: the quickstart run (tcmgc-tiny on sample_data/, its config's 40 epochs).

Denormal floats (tiny magnitudes that weights and activations decay into) make CPU arithmetic many times slower;
tcmgc flushes them to zero wherever a model runs on the CPU. This benchmark trains the quickstart and reports the
mean epoch time of the first 5 and of the last 10 epochs: with flushing, their ratio stays near 1.

    python benchmarks/train_speed.py          # quick: flushing on (what tcmgc does), about 2 minutes
    python benchmarks/train_speed.py --full   # side by side, each in its own process: flushing on, then off

The last line printed is one JSON object.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _train(flush: bool, workspace: str, epochs: int, out: str) -> None:
    if not flush:  # what tcmgc did before: leave the CPU's default (denormals kept)
        import tcmgc_cli.model.encoder as encoder

        encoder.torch.set_flush_denormal = lambda mode: True  # type: ignore[assignment]
    os.environ["TCMGC_WORKSPACE"] = workspace
    from tcmgc_cli.data.source import DataSource
    from tcmgc_cli.training import train

    seconds: list[float] = []
    result = train(
        DataSource("msrvtt", ROOT / "sample_data" / "msrvtt"), "tcmgc-tiny", output=Path(workspace) / f"run-{flush}",
        epochs=epochs, on_event=lambda e: e["kind"] == "epoch" and seconds.append(e["seconds"]),
    )  # fmt: skip
    first, last = statistics.mean(seconds[:5]), statistics.mean(seconds[-10:])
    stats = {"flush_denormal": flush, "epochs": len(seconds), "first5_s": round(first, 3), "last10_s": round(last, 3),
             "last10_over_first5": round(last / first, 3), "total_s": round(sum(seconds), 1),
             "best_t2v_R@1": result.state.best, "best_epoch": result.state.best_epoch}  # fmt: skip
    Path(out).write_text(json.dumps(stats))


def run(flush: bool, workspace: str, epochs: int) -> dict[str, object]:
    out = os.path.join(workspace, f"stats-{flush}.json")
    proc = mp.get_context("spawn").Process(target=_train, args=(flush, workspace, epochs, out))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"training with flush_denormal={flush} failed (exit code {proc.exitcode})")
    stats: dict[str, object] = json.loads(Path(out).read_text())
    print(json.dumps(stats), flush=True)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also train without flushing denormals, for the ratio")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workspace:
        os.environ["TCMGC_WORKSPACE"] = workspace
        from tcmgc_cli.extract import extract_dataset

        extract_dataset("msrvtt", ROOT / "sample_data" / "msrvtt", "tcmgc-tiny", workers=0)  # the quickstart's cache
        results = [run(True, workspace, args.epochs)]
        if args.full:
            results.append(run(False, workspace, args.epochs))
    summary: dict[str, object] = {"benchmark": "train_speed", "on": results[0]}
    if args.full:
        on, off = results
        summary["off"] = off
        summary["total_speedup"] = round(float(off["total_s"]) / float(on["total_s"]), 2)  # type: ignore[arg-type]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

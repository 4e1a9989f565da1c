"""float32 or bfloat16, chosen by measurement: what is fastest is a property of the host, the model and the batch.

bf16 autocast is 2-3x faster than float32 for some towers on a CPU with AVX-512 BF16, and for ViT-B/32 on the same
CPU 3x slower at 8 frames a batch but 1.3x faster at 64 and 2x at 256; faster again with AMX or on GPUs. `auto`
times the model both ways, at a batch of the size it runs at, the first time it runs on a host, and takes bf16 only
where it is faster (by 5%, more than the timing's noise) and its outputs stay within MAX_COSINE_GAP of float32's in
cosine. The answer is kept per host, device, thread count, model and role in
`$XDG_CACHE_HOME/tcmgc/precision.json` (default `~/.cache/tcmgc/`), so later runs decide at once.
`TCMGC_PRECISION=fp32` (or bf16) pins what `auto` means, for runs that must not depend on the host."""

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tcmgc_cli.errors import ConfigError
from tcmgc_cli.fileio import write_text_atomic

PRECISIONS = ("auto", "fp32", "bf16")
MAX_COSINE_GAP = 1e-3  # bf16 outputs must keep cosine >= 1 - this with float32's, row by row
MIN_SPEEDUP = 1.05  # bf16 must be at least this much faster: a tie within the timing's noise stays float32

log = logging.getLogger(__name__)


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}.")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast on CPU or CUDA when precision is "bf16"; float32 otherwise."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def record_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tcmgc" / "precision.json"


def host_key(device: torch.device) -> str:
    """What decides which precision is faster: the machine, the device, the threads, the library."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        cpu = torch.cuda.get_device_name(device)
    return f"{platform.node()}|{cpu}|{device.type}|{torch.get_num_threads()} threads|torch {torch.__version__}"


def measured(role: str, device: torch.device) -> dict[str, Any] | None:
    """The kept measurement of `role` (a model and what runs of it) on this host, if any."""
    found: dict[str, Any] | None = _records().get(f"{host_key(device)}|{role}")
    return found


def resolve(precision: str, role: str, device: torch.device, run: Callable[[str], torch.Tensor]) -> str:
    """fp32 or bf16: as asked, or, for "auto", the measured choice for `role` on this host (measured now the first
    time: `run(precision)` computes one batch's outputs (N, D) from the same inputs every call)."""
    if check(precision) != "auto":
        return precision
    pinned = os.environ.get("TCMGC_PRECISION", "")
    if pinned in ("fp32", "bf16"):
        return pinned
    kept = measured(role, device)
    if kept is None:
        log.info(f"Timing fp32 against bf16 for the {role} on this host (once; kept in {record_path()}).")
        kept = _measure(run)
        records = _records()
        records[f"{host_key(device)}|{role}"] = kept
        path = record_path()
        with contextlib.suppress(OSError):  # a read-only home: decide again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(records, indent=1, sort_keys=True))
    return str(kept["precision"])


def _records() -> dict[str, Any]:
    try:
        data = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _measure(run: Callable[[str], torch.Tensor], budget_s: float = 0.5, max_rounds: int = 20) -> dict[str, Any]:
    """Time both precisions in alternating rounds (drift in the machine's speed hits both alike) until `budget_s`
    has passed (at least 3 rounds), best of each; bf16 is chosen when it is MIN_SPEEDUP faster and close enough."""
    outputs = {p: run(p).float() for p in ("fp32", "bf16")}  # warm-up, and the outputs compared below
    best = {"fp32": float("inf"), "bf16": float("inf")}
    start = time.perf_counter()
    for round_ in range(max_rounds):
        for precision in best:
            t0 = time.perf_counter()
            run(precision)
            best[precision] = min(best[precision], time.perf_counter() - t0)
        if round_ >= 2 and time.perf_counter() - start > budget_s:
            break
    cosine = float(F.cosine_similarity(outputs["fp32"].flatten(1), outputs["bf16"].flatten(1), dim=-1).min())
    faster = best["bf16"] * MIN_SPEEDUP <= best["fp32"]
    choice = "bf16" if faster and cosine >= 1 - MAX_COSINE_GAP else "fp32"
    return {"precision": choice, "fp32_s": round(best["fp32"], 4), "bf16_s": round(best["bf16"], 4),
            "min_cosine": round(cosine, 6), "when": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip


def cap_threads(threads: int | None) -> None:
    """At most `threads` CPU threads for torch's work (people index in the background on laptops); None: every core.
    The measured precision is kept per thread count (`host_key`)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads}); leave it out to use every core.")
    torch.set_num_threads(threads)

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
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tcmgc_cli.errors import ConfigError
from tcmgc_cli.fileio import write_text_atomic

PRECISIONS = ("auto", "fp32", "bf16")
EXTRACT_PRECISIONS = (*PRECISIONS, "int8")  # int8: the image tower's linear layers, on a CPU, opt-in (lossy)
MAX_COSINE_GAP = 1e-3  # bf16 outputs must keep cosine >= 1 - this with float32's, row by row
MIN_SPEEDUP = 1.05  # bf16 must be at least this much faster: a tie within the timing's noise stays float32
CLOSE = 1.15  # timings this near each other are measured for more rounds before deciding
MAX_AGE_DAYS = 30  # a record older than this is measured again (a new driver, a changed machine)
BUSY_SHARE = 0.25  # a record taken while other processes used more of the CPUs than this is measured again
CONTRADICTED = 1.5  # a record whose choice runs this much slower or faster in real work is measured again

log = logging.getLogger(__name__)


def check(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    if precision not in allowed:
        raise ConfigError(f"unknown precision {precision!r}: use {', '.join(allowed)}.")
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
    if kept is None or stale(kept):
        log.info(f"Timing fp32 against bf16 for the {role} on this host (once; kept in {record_path()}).")
        kept = _measure(run)
        kept["busy"] = busy(kept)
        records = _records()
        records[f"{host_key(device)}|{role}"] = kept
        path = record_path()
        with contextlib.suppress(OSError):  # a read-only home: decide again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(records, indent=1, sort_keys=True))
    return str(kept["precision"])


def stale(record: dict[str, Any], now: float | None = None) -> bool:
    """Whether a record must be measured again: taken while the machine was busy with other work (the two
    precisions can then rank the other way round, and a record is otherwise kept for good), older than
    MAX_AGE_DAYS, or unreadable."""
    try:
        when = time.mktime(time.strptime(str(record["when"]), "%Y-%m-%d %H:%M:%S"))
    except (KeyError, ValueError):
        return True
    old = ((now or time.time()) - when) / 86400 > MAX_AGE_DAYS
    return bool(record.get("busy")) or "contradicted" in record or old


def observe(role: str, device: torch.device, precision: str, seconds: float) -> bool:
    """What real work saw: `seconds` for one measured batch's worth of work in `precision`, where the record for
    `role` chose it. A record whose own timing of that precision is off by more than CONTRADICTED either way was taken under
    other conditions (a busy moment, another power state), so its choice is not to be trusted: it is marked, and
    measured again next time. Returns whether it was marked."""
    records = _records()
    key = f"{host_key(device)}|{role}"
    kept = records.get(key)
    chose = isinstance(kept, dict) and kept.get("precision") == precision
    expected = float(kept.get(f"{precision}_s", 0.0)) if chose else 0.0  # type: ignore[union-attr]
    if expected <= 0 or 1 / CONTRADICTED <= seconds / expected <= CONTRADICTED:
        return False
    kept["contradicted"] = round(seconds / expected, 2)  # type: ignore[index]
    with contextlib.suppress(OSError):
        write_text_atomic(record_path(), json.dumps(records, indent=1, sort_keys=True))
    return True


def busy(record: dict[str, Any]) -> bool:
    """Whether other processes took more than BUSY_SHARE of the machine's CPU time while the record was measured."""
    return float(record.get("others_cpu", 0.0)) > BUSY_SHARE


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has spent busy, this process's own), or None without /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def _others_share(before: tuple[float, float] | None, wall: float) -> float:
    """The share of the machine's CPU time that other processes took since `before` (0 where unknown)."""
    after = _cpu_seconds()
    if before is None or after is None or wall <= 0:
        return 0.0
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (wall * (os.cpu_count() or 1)))


def records() -> dict[str, dict[str, Any]]:
    """Every kept measurement: "<host>|<role>" -> its record."""
    return _records()


def forget() -> int:
    """Delete every kept measurement (the next `auto` measures again); how many there were."""
    count = len(_records())
    with contextlib.suppress(FileNotFoundError):
        record_path().unlink()
    return count


def _records() -> dict[str, Any]:
    try:
        data = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _measure(run: Callable[[str], torch.Tensor], budget_s: float = 0.5, max_rounds: int = 20) -> dict[str, Any]:
    """Time both precisions in alternating rounds (drift in the machine's speed hits both alike) until `budget_s`
    has passed (at least 3 rounds), and on while the two are within CLOSE of each other (up to `max_rounds`): best
    of each; bf16 is chosen when it is MIN_SPEEDUP faster and close enough."""
    outputs = {p: run(p).float() for p in ("fp32", "bf16")}  # warm-up, and the outputs compared below
    best = {"fp32": float("inf"), "bf16": float("inf")}
    start, cpu = time.perf_counter(), _cpu_seconds()
    for round_ in range(max_rounds):
        for precision in best:
            t0 = time.perf_counter()
            run(precision)
            best[precision] = min(best[precision], time.perf_counter() - t0)
        close = max(best.values()) < CLOSE * min(best.values())
        if round_ >= 2 and time.perf_counter() - start > budget_s and not close:
            break
    cosine = float(F.cosine_similarity(outputs["fp32"].flatten(1), outputs["bf16"].flatten(1), dim=-1).min())
    faster = best["bf16"] * MIN_SPEEDUP <= best["fp32"]
    choice = "bf16" if faster and cosine >= 1 - MAX_COSINE_GAP else "fp32"
    return {"precision": choice, "fp32_s": round(best["fp32"], 4), "bf16_s": round(best["bf16"], 4),
            "min_cosine": round(cosine, 6), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "others_cpu": round(_others_share(cpu, time.perf_counter() - start), 3)}  # fmt: skip


def cap_threads(threads: int | None) -> None:
    """At most `threads` CPU threads for torch's work (people index in the background on laptops); None: every core.
    The measured precision is kept per thread count (`host_key`)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads}); leave it out to use every core.")
    torch.set_num_threads(threads)

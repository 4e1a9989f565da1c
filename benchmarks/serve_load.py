"""Concurrent queries against `tcmgc serve` over the sample collection with the tiny model: latency and errors.

Extracts sample_data/ with tcmgc-tiny, trains it for 2 epochs (so the TC-MGC scorer answers), starts
`tcmgc serve` in its own process on a free local port, then fires concurrent clients at /api/search: once with
queries batched as they arrive (the default, --max-batch 16), once one at a time (--max-batch 1), side by side.
Goal: no errors, p99 under 100 ms on a 2-core CPU.

    python benchmarks/serve_load.py            # 8 clients x 50 queries
    python benchmarks/serve_load.py --full     # 16 clients x 100 queries

The last line printed is one JSON object.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["a red circle moves left", "a blue square moves up", "a green triangle moves down",
           "a yellow circle moves right", "a white square is moving left", "a purple triangle moves up"]  # fmt: skip


def tcmgc(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "tcmgc_cli", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def client(base: str, n: int, offset: int) -> tuple[list[float], int]:
    latencies, errors = [], 0
    with httpx.Client(timeout=30) as http:
        for i in range(n):
            start = time.perf_counter()
            response = http.get(f"{base}/api/search", params={"q": QUERIES[(i + offset) % len(QUERIES)], "top_k": 10})
            latencies.append(1000 * (time.perf_counter() - start))
            errors += response.status_code != 200 or not response.json()["results"]
    return latencies, errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(env: dict[str, str], clients: int, queries: int, max_batch: int) -> dict[str, float]:
    """Start `tcmgc serve --max-batch max_batch`, fire the clients at it, stop it: latency figures."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tcmgc_cli", "serve", "--port", str(port), "--max-batch",
                               str(max_batch)], env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/openapi.json").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client(base, 5, 0)  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(lambda c: client(base, queries, c), range(clients)))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = sorted(x for lat, _ in done for x in lat)
    return {
        "errors": sum(e for _, e in done), "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1), "max_ms": round(latencies[-1], 1),
        "requests_per_s": round(len(latencies) / wall, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="16 clients x 100 queries")
    args = parser.parse_args()
    clients, queries = (16, 100) if args.full else (8, 50)
    with tempfile.TemporaryDirectory() as workspace:
        env = {**os.environ, "TCMGC_WORKSPACE": workspace, "HF_HUB_OFFLINE": "1"}
        data = ["--dataset", "msrvtt", "--data-root", str(ROOT / "sample_data" / "msrvtt")]
        tcmgc("extract", *data, "--model", "tcmgc-tiny", env=env)
        tcmgc("train", *data, "--model", "tcmgc-tiny", "--epochs", "2", "--json", env=env)
        batched = measure(env, clients, queries, max_batch=16)
        alone = measure(env, clients, queries, max_batch=1)
    for name, figures in (("one query at a time (--max-batch 1)", alone), ("batched (--max-batch 16)", batched)):
        print(f"{name}: {figures}")
    summary = {
        "benchmark": "serve_load", "clients": clients, "queries_per_client": queries, "requests": clients * queries,
        **batched, "unbatched": alone, "p99_ratio_unbatched_to_batched": round(alone["p99_ms"] / batched["p99_ms"], 2),
        "throughput_ratio_batched_to_unbatched": round(batched["requests_per_s"] / alone["requests_per_s"], 2),
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""The search page and HTTP API of `tcmgc serve` (FastAPI + uvicorn, plain HTML/CSS/JS, no build step)."""

"""Why a video came up: how a query's words spread their attention over the frames of the video's best entry
(`tcmgc search --explain`, the page's explain view). TC-MGC: LVA's attention weights; without text conditioning or
with CLIP: a softmax over the frames' similarities."""

import numpy as np
import torch

from tcmgc_cli.search.index import SearchIndex


def attention_of(index: SearchIndex, queries: torch.Tensor, entries: list[int]) -> np.ndarray:
    """How each query vector (n, D) spreads over the slots of each entry: (n, E, T)."""
    if not entries:
        return np.zeros((len(queries), 0, index.collection.num_frames), dtype=np.float32)
    dev, idx = queries.device, torch.tensor(entries)
    frames, temporal, _ = index.inputs_of(idx)
    with torch.no_grad():
        a = index.ranker.attention(queries, frames.to(dev), temporal.to(dev))
    return a.float().cpu().numpy()


def word_attention(index: SearchIndex, query: str, video_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The words of a query, their attention over the real frames of the video's best entry for it (words, T'),
    and those frames' times."""
    c = index.collection
    rows = c.entries_of(index.video_number(video_id)).tolist()
    text, _ = index.encode_queries([query])
    entry = rows[int(index.full_scores(text, torch.tensor(rows))[0].argmax())] if len(rows) > 1 else rows[0]
    tok = index.ranker.tokenizer
    ids = tok([query])[0]
    n = int(ids.argmax()) + 1  # up to the end token
    words = [tok.decode_one(int(t)) for t in ids[:n]]
    real = c.masks(torch.tensor([entry]))[0].numpy()  # padded slots are left out of the picture
    weights = attention_of(index, text.words[0, :n], [entry])[:, 0][:, real]
    return words, weights, c.entry_times(entry)[real]

import dataclasses
import math
import os
import socket
from pathlib import Path

import pytest
import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import RunFolder
from tcmgc_cli.config import TrainConfig
from tcmgc_cli.data.annotations import Split, load_split
from tcmgc_cli.model.encoder import Tokenizer
from tcmgc_cli.model.factory import create_model, resolve_spec
from tcmgc_cli.optim import BertAdam, warmup_cosine
from tcmgc_cli.training import TrainData, Trainer, seed_everything
from tests.helpers import SAMPLE_MSRVTT

CFG = TrainConfig(
    epochs=2, batch_size=8, lr=1e-3, clip_lr_scale=1.0, freeze="visual", optimizer="adamw", log_every=1000
)


def small_split(n_videos: int = 12) -> Split:
    split = load_split("msrvtt", SAMPLE_MSRVTT, "train")
    return split.restrict({f"video{i}" for i in range(n_videos)})


def make_trainer(
    cache_path: Path,
    run_dir: Path,
    cfg: TrainConfig = CFG,
    spec_overrides: dict[str, object] | None = None,
    **kw: object,
) -> Trainer:
    spec = resolve_spec("tcmgc-tiny", overrides=spec_overrides)
    seed_everything(cfg.seed)
    model = create_model(spec)
    cache = FeatureCache(cache_path)
    data = TrainData.build(small_split(), cache, Tokenizer(spec.clip, spec.config.max_words), from_frames=False)
    return Trainer(model, spec, cfg, data, RunFolder(run_dir), torch.device("cpu"), cache, **kw)  # type: ignore[arg-type]


def test_bert_adam_step_matches_formula() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    p.grad = torch.tensor([3.0, 4.0])  # norm 5 -> clipped to norm 1: (0.6, 0.8)
    BertAdam([{"params": [p], "weight_decay": 0.1}], lr=0.01, max_grad_norm=1.0).step()
    g = torch.tensor([0.6, 0.8])
    m, v = 0.1 * g, 0.02 * g * g  # one step, no bias correction
    want = torch.tensor([1.0, -2.0]) - 0.01 * (m / (v.sqrt() + 1e-6) + 0.1 * torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(p.detach(), want)


def test_warmup_cosine() -> None:
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.5, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0)


def test_training_lowers_the_loss_and_writes_checkpoints(sample_cache: Path, tmp_path: Path) -> None:
    losses: list[float] = []
    trainer = make_trainer(
        sample_cache,
        tmp_path,
        dataclasses.replace(CFG, epochs=3),
        on_event=lambda e: e["kind"] == "step" and losses.append(e["loss"]),
    )
    val = load_split("msrvtt", SAMPLE_MSRVTT, "test")
    state = trainer.fit(val)
    assert (
        state.epoch == 3
        and (tmp_path / "checkpoints" / "best.pt").is_file()
        and (tmp_path / "checkpoints" / "last.pt").is_file()
    )
    assert sum(losses[-3:]) < sum(losses[:3])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"t2v_R@1"' in lines[-1]


class Killed(Exception):
    pass


def test_killed_and_resumed_run_ends_with_the_same_weights(sample_cache: Path, tmp_path: Path) -> None:
    full = make_trainer(sample_cache, tmp_path / "full")
    full.fit(None)

    def die_after_first_epoch(event: dict[str, object]) -> None:
        if event["kind"] == "epoch" and event["epoch"] == 1:
            raise Killed

    cut = make_trainer(sample_cache, tmp_path / "cut", on_event=die_after_first_epoch)
    with pytest.raises(Killed):
        cut.fit(None)
    torch.manual_seed(1234)  # the resumed process starts from another RNG state: the checkpoint must restore it
    resumed = make_trainer(sample_cache, tmp_path / "cut")
    assert resumed.resume() and resumed.state.epoch == 1
    resumed.fit(None)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_nothing_to_resume_starts_fresh(sample_cache: Path, tmp_path: Path) -> None:
    assert not make_trainer(sample_cache, tmp_path).resume()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DDP_CFG = dataclasses.replace(CFG, epochs=2, expand_captions=False, seed=3)  # 12 videos, batches of 8: 4 steps


def _rank_train(rank: int, cache_path: str, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", HF_HUB_OFFLINE="1"
    )
    torch.set_num_threads(1)
    trainer = make_trainer(Path(cache_path), Path(out) / f"r{rank}", DDP_CFG, spec_overrides={"lva_dropout": 0.0})
    trainer.fit(None)
    torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_train_the_same_weights_as_one(sample_cache: Path, tmp_path: Path) -> None:
    """DistributedDataParallel with the features gathered: 2 processes of 4 captions each take the same optimizer
    steps as 1 process of 8. Every parameter is compared (a wrongly scaled text-tower gradient would show)."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _rank_train, args=(str(sample_cache), _free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    torch.set_num_threads(1)
    single = make_trainer(sample_cache, tmp_path / "single", DDP_CFG, spec_overrides={"lva_dropout": 0.0})
    start = {k: v.clone() for k, v in single.model.state_dict().items()}
    state = single.fit(None)
    assert state.step == 4
    want = single.model.state_dict()
    moved = [k for k in want if k.startswith("clip.transformer") and not torch.equal(want[k], start[k])]
    assert moved, "the text tower must train in this test, or it cannot catch a wrong encoder gradient"
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-5, msg=f"rank {rank}: {name}")


@pytest.mark.slow
def test_measuring_the_precision_leaves_training_as_it_would_be(
    sample_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto` times a real step (forward and backward) before training: nothing of it may reach the weights or the
    random state, so the run equals one told the measured precision outright."""
    from tcmgc_cli.precision import measured

    monkeypatch.delenv("TCMGC_PRECISION")
    auto = make_trainer(sample_cache, tmp_path / "auto", dataclasses.replace(CFG, precision="auto"))
    kept = measured("train step tcmgc-tiny (tcmgc-clip-tiny)", torch.device("cpu"))
    assert kept is not None and auto.precision == kept["precision"] and kept["fp32_s"] > 0 and kept["bf16_s"] > 0
    auto.fit(None)
    told = make_trainer(sample_cache, tmp_path / "told", dataclasses.replace(CFG, precision=auto.precision))
    told.fit(None)  # (made after the first run's fit: making a trainer reseeds the global random state)
    for (name, a), b in zip(auto.model.state_dict().items(), told.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

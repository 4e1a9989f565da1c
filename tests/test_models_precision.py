"""Any open_clip model, the precision a host runs fastest (measured, remembered, checked), and a thread cap."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tcmgc_cli import precision as prec
from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.cli import app

runner = CliRunner()


def extract(folder: Path, cache: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["extract", "--videos", str(folder), "--cache", str(cache), "--workers", "0",
                                 "--json", *extra])  # fmt: skip
    return result.exit_code, result.output


def test_auto_takes_bf16_only_when_faster_and_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCMGC_PRECISION")
    monkeypatch.setattr(prec, "busy", lambda record: False)  # a loaded test machine would ask for measuring again
    x = torch.randn(4, 16)
    slow_bf16 = {"fp32": 0.0, "bf16": 0.02}
    calls: list[str] = []

    def run(speeds: dict[str, float], bf16_out: torch.Tensor) -> object:
        def go(p: str) -> torch.Tensor:
            import time

            calls.append(p)
            time.sleep(speeds[p])
            return x if p == "fp32" else bf16_out

        return go

    cpu = torch.device("cpu")
    assert prec.resolve("auto", "slow bf16", cpu, run(slow_bf16, x)) == "fp32"  # type: ignore[arg-type]
    fast = {"fp32": 0.02, "bf16": 0.0}
    assert prec.resolve("auto", "fast but far", cpu, run(fast, x + 0.5 * torch.randn(4, 16))) == "fp32"  # type: ignore[arg-type]
    assert prec.resolve("auto", "fast and close", cpu, run(fast, x * (1 + 1e-4))) == "bf16"  # type: ignore[arg-type]
    tie = {"fp32": 0.020, "bf16": 0.0198}  # 1% faster: within the timing's noise, so float32 stays
    assert prec.resolve("auto", "a tie", cpu, run(tie, x * (1 + 1e-4))) == "fp32"  # type: ignore[arg-type]
    calls.clear()
    assert prec.resolve("auto", "fast and close", cpu, run(slow_bf16, x)) == "bf16"  # type: ignore[arg-type]
    assert calls == []  # remembered for this host: not measured again
    kept = prec.measured("fast but far", cpu)
    assert kept is not None and kept["min_cosine"] < 1 - prec.MAX_COSINE_GAP and kept["bf16_s"] < kept["fp32_s"]
    assert prec.resolve("fp32", "fast and close", cpu, run(fast, x)) == "fp32"  # asked for: as asked
    with pytest.raises(Exception, match="unknown precision 'half'"):
        prec.check("half")


def test_a_record_taken_while_busy_or_grown_old_is_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy machine can rank the two precisions the other way round, and a record is otherwise kept for good:
    one taken under load, or older than MAX_AGE_DAYS, is measured again by the next `auto` run."""
    monkeypatch.delenv("TCMGC_PRECISION")
    x, cpu, calls = torch.randn(4, 16), torch.device("cpu"), []

    def run(p: str) -> torch.Tensor:
        calls.append(p)
        return x

    monkeypatch.setattr(prec, "busy", lambda record: True)
    prec.resolve("auto", "a tower", cpu, run)
    monkeypatch.setattr(prec, "busy", lambda record: False)
    calls.clear()
    prec.resolve("auto", "a tower", cpu, run)
    assert calls  # the busy record did not count
    calls.clear()
    prec.resolve("auto", "a tower", cpu, run)
    assert calls == []  # a quiet one does
    records = json.loads(prec.record_path().read_text())
    for record in records.values():
        record["when"] = "2000-01-01 00:00:00"
    prec.record_path().write_text(json.dumps(records))
    prec.resolve("auto", "a tower", cpu, run)
    assert calls  # too old: measured again


def test_a_record_that_real_work_contradicts_is_measured_again(
    monkeypatch: pytest.MonkeyPatch, video_dir: Path, tmp_path: Path
) -> None:
    """A record says how fast its choice runs; real work that ran it more than CONTRADICTED slower (or faster) marks
    the record, and the next `auto` measures again; work that agrees, or ran the other precision, leaves it. An
    extraction under `auto` reports what its encoding saw."""
    from tcmgc_cli.extract import pipeline

    monkeypatch.delenv("TCMGC_PRECISION")
    monkeypatch.setattr(prec, "busy", lambda record: False)
    x, cpu, calls = torch.randn(4, 16), torch.device("cpu"), []

    def run(p: str) -> torch.Tensor:
        calls.append(p)
        return x

    chose = prec.resolve("auto", "a tower", cpu, run)
    records = json.loads(prec.record_path().read_text())
    next(iter(records.values()))[f"{chose}_s"] = 1.0
    prec.record_path().write_text(json.dumps(records))
    other = "bf16" if chose == "fp32" else "fp32"
    assert not prec.observe("a tower", cpu, chose, 1.4) and not prec.observe("a tower", cpu, other, 9.0)
    calls.clear()
    prec.resolve("auto", "a tower", cpu, run)
    assert calls == []  # agreed: kept
    assert prec.observe("a tower", cpu, chose, 2.0)
    prec.resolve("auto", "a tower", cpu, run)
    assert calls and "contradicted" not in next(iter(json.loads(prec.record_path().read_text()).values()))

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(pipeline, "OBSERVED_S", 0.0)
    monkeypatch.setattr(pipeline, "observe", lambda role, dev, p, seconds: seen.append((role, p)) or False)
    assert extract(video_dir, tmp_path / "c.h5", "--model", "tcmgc-tiny")[0] == 0
    assert seen and seen[0][0].startswith("image tower tcmgc-clip-tiny") and seen[0][1] in ("fp32", "bf16")


def test_models_precision_lists_and_clears_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCMGC_PRECISION")
    monkeypatch.setattr(prec, "busy", lambda record: False)
    prec.resolve("auto", "image tower X", torch.device("cpu"), lambda p: torch.ones(2, 3))
    listed = runner.invoke(app, ["models", "--precision", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [r["role"] for r in rows] == ["image tower X"] and rows[0]["precision"] in ("fp32", "bf16")
    assert {"fp32_s", "bf16_s", "when", "stale"} <= set(rows[0])
    table = runner.invoke(app, ["models", "--precision"], env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "image tower X" in table.output
    cleared = runner.invoke(app, ["models", "--precision", "--clear", "--json"])
    assert json.loads(cleared.stdout) == {"cleared": 1} and not prec.record_path().exists()
    assert json.loads(runner.invoke(app, ["models", "--precision", "--json"]).stdout) == []


def test_bf16_frames_run_a_bfloat16_copy_and_stay_close_to_fp32() -> None:
    """bf16 encodes with a bfloat16 copy of the tower (no weight casts per call); the fp32 tower and its
    fingerprint stay as they were, and the features stay within the 1e-3 cosine that auto demands."""
    from tcmgc_cli.model.encoder import FrameEncoder, module_fingerprint

    fp32 = FrameEncoder.load("tcmgc-clip-tiny", None, "cpu", "fp32")
    before = module_fingerprint(fp32.visual)
    bf16 = fp32.with_precision("bf16")
    assert {p.dtype for p in bf16.visual.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fp32.visual.parameters()} == {torch.float32} and module_fingerprint(fp32.visual) == before
    assert bf16.fingerprint == fp32.fingerprint + ":bf16" and bf16.with_precision("bf16") is bf16
    frames = torch.randint(0, 256, (6, fp32.preprocess.size, fp32.preprocess.size, 3), dtype=torch.uint8)
    cosine = torch.nn.functional.cosine_similarity(bf16(frames), fp32(frames), dim=-1)
    assert bool((cosine > 1 - prec.MAX_COSINE_GAP).all()) and bf16(frames).dtype == torch.float32
    with pytest.raises(ValueError):
        bf16.with_precision("fp32")


def test_a_cache_records_its_precision_and_keeps_it(video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    assert extract(video_dir, cache, "--model", "tcmgc-tiny", "--precision", "bf16")[0] == 0
    assert FeatureCache(cache).settings.encoder_fingerprint.endswith(":bf16")
    code, output = extract(video_dir, cache, "--model", "tcmgc-tiny", "--precision", "fp32")
    assert code == 1 and "other settings" in output
    (video_dir / "video0.mp4").rename(video_dir / "again.mp4")
    code, output = extract(video_dir, cache, "--model", "tcmgc-tiny")  # auto: the cache's own precision
    assert code == 0, output and json.loads(output)["extracted"] == ["again"]


def test_int8_quantizes_the_towers_linear_layers_on_a_cpu_only() -> None:
    """int8: a copy whose every nn.Linear is a dynamic int8 layer (the fp32 tower untouched), features near fp32's,
    the cache fingerprint marked; refused on a GPU; auto never takes it (it chooses between fp32 and bf16 alone)."""
    import dataclasses

    from tcmgc_cli.errors import ConfigError
    from tcmgc_cli.model.encoder import FrameEncoder

    fp32 = FrameEncoder.load("tcmgc-clip-tiny", None, "cpu", "fp32")
    int8 = fp32.with_precision("int8")
    assert any("quantized.dynamic" in type(m).__module__ for m in int8.visual.modules())
    assert not any(type(m) in (torch.nn.Linear, torch.nn.MultiheadAttention) for m in int8.visual.modules())
    assert any(type(m) is torch.nn.Linear for m in fp32.visual.modules())
    assert int8.fingerprint == fp32.fingerprint + ":int8"
    frames = torch.randint(0, 256, (6, fp32.preprocess.size, fp32.preprocess.size, 3), dtype=torch.uint8)
    assert bool((torch.nn.functional.cosine_similarity(int8(frames), fp32(frames), dim=-1) > 0.99).all())
    with pytest.raises(ConfigError, match="int8 runs on a CPU"):
        dataclasses.replace(fp32, device=torch.device("cuda")).with_precision("int8")
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        prec.resolve("int8", "train step", torch.device("cpu"), lambda p: frames)


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_attention_is_the_attention_it_replaces(batch_first: bool) -> None:
    """int8 splits torch's self-attention into linear layers around scaled dot-product attention (so that they are
    quantized): before quantizing, the same outputs as nn.MultiheadAttention, with no mask, a float mask or a
    causal bool one."""
    from tcmgc_cli.model.quantize import SplitAttention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    split = SplitAttention(mha)
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)  # True: not attended, as torch's masks say
    for mask in (None, torch.randn(7, 7), causal):
        want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = split(x, x, x, need_weights=False, attn_mask=mask)[0]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_an_int8_cache_says_so_and_searches(video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    code, output = extract(video_dir, cache, "--model", "tcmgc-tiny", "--precision", "int8")
    assert code == 0, output
    settings = FeatureCache(cache).settings
    assert settings.precision == "int8" and settings.encoder_fingerprint.endswith(":int8")
    found = runner.invoke(app, ["search", "a red circle", "--cache", str(cache), "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout.splitlines()[0])["results"]
    code, output = extract(video_dir, cache, "--model", "tcmgc-tiny", "--precision", "fp32")
    assert code == 1 and "other settings" in output


@pytest.mark.slow
def test_a_non_clip_model_extracts_and_searches(video_dir: Path, tmp_path: Path) -> None:
    """MobileCLIP2-S0 (a timm image tower and a CLIP-BPE text tower without a causal mask), random weights."""
    from tcmgc_cli.model.encoder import encode_tokens, load_clip

    cache = tmp_path / "m.h5"
    code, output = extract(video_dir, cache, "--model", "MobileCLIP2-S0", "--pretrained", "none")
    assert code == 0, output
    settings = FeatureCache(cache).settings
    assert settings.encoder == "MobileCLIP2-S0" and settings.image_size == 256
    found = runner.invoke(app, ["search", "a red circle", "--cache", str(cache), "--scorer", "clip", "--json"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["results"]) == 4
    clip, _ = load_clip("MobileCLIP2-S0", None)  # token features, against the tower's own forward
    tokens = torch.randint(1, 1000, (2, 77))
    tokens[:, 9] = 49407
    with torch.no_grad():
        words, sentence = encode_tokens(clip, tokens)
        clip.text.output_tokens = False
        pooled = clip.text(tokens)
    torch.testing.assert_close(sentence, pooled)
    torch.testing.assert_close(words[torch.arange(2), tokens.argmax(-1)], pooled)  # its pooling: the end token
    assert words.shape == (2, 77, 512)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "ViT-Imaginary-99"], "unknown model 'ViT-Imaginary-99'"),
        (["--model", "ViT-B-32-quickgelu", "--pretrained", "no-such-tag"], "could not load weights 'no-such-tag'"),
        (["--model", "tcmgc-tiny", "--threads", "0"], "--threads must be at least 1"),
        (["--model", "tcmgc-tiny", "--precision", "half"], "unknown precision 'half'"),
    ],
)
def test_bad_models_and_options_are_one_line(video_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, output = extract(video_dir, tmp_path / "c.h5", *args)
    assert code in (1, 2) and message in output and "Traceback" not in output


def test_threads_cap_the_tower(video_dir: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        assert extract(video_dir, tmp_path / "c.h5", "--model", "tcmgc-tiny", "--threads", "1")[0] == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_tcmgc_on_a_text_tower_without_token_features_is_one_line() -> None:
    from tcmgc_cli.errors import EncoderError
    from tcmgc_cli.model.encoder import encode_tokens

    class HfTower(torch.nn.Module):  # what open_clip's Hugging Face text towers look like: no per-token output
        pass

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text = HfTower()

    with pytest.raises(EncoderError, match="no per-token features"):
        encode_tokens(Model(), torch.zeros(1, 4, dtype=torch.long))

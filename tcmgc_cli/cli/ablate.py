"""`tcmgc ablate`: train and evaluate a grid of TC-MGC variants on one cache; resumable."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli._common import DeviceOpt, JsonOpt, handle_errors, print_json, stderr, stdout
from tcmgc_cli.cli._data import (
    AnnotationsOpt,
    BatchSizeOpt,
    CacheOpt,
    ConfigOpt,
    DataRootOpt,
    DatasetName,
    DatasetOpt,
    EpochsOpt,
    FreezeOpt,
    LrOpt,
    ModelOpt,
    PretrainedOpt,
    SetOpt,
    SkipMissingOpt,
    TrainListOpt,
    source,
)

if TYPE_CHECKING:
    from tcmgc_cli.ablation import Ablation


def ablate_command(
    keep_rates: Annotated[
        str | None, typer.Option(help="Keep rates r to try, e.g. 0.05,0.1,0.5 (each in (0, 1]).")
    ] = None,
    sdr_alphas: Annotated[str | None, typer.Option(help="SDR weights to try, e.g. 0,0.1,0.5,1.0.")] = None,
    components: Annotated[
        str | None,
        typer.Option(
            help="full,-sr,-lsa,-sdr,-textcond,+phrases,+snippets,+phrases+snippets,+hierarchy,+hierarchy-agnostic: "
            "each '-x' removes one part; '+phrases' and '+snippets' add text phrases or video snippets (windows of "
            "frames) as units, the paper's open question 2 (+clips is the earlier name of +snippets); '+hierarchy' "
            "adds a hierarchical interaction model on LVA's text-conditioned units, '+hierarchy-agnostic' the same "
            "on the temporal encoder's frames, the paper's open question 3. Default, with no grid option: "
            "full,-sr,-lsa,-sdr,-textcond."
        ),
    ] = None,
    similarities: Annotated[
        str | None,
        typer.Option(
            help='Combinations of vs,vw,sf,fw separated by ";", e.g. "vs,vw;vs,fw;vs,vw,sf,fw": each one trained with '
            "SDR off and with each --sdr-rules rule, to see where SDR lowers R@1 (the paper's open question 4)."
        ),
    ] = None,
    sdr_rules: Annotated[
        str | None,
        typer.Option(help="SDR rules for --similarities (default: variance), e.g. variance,standardized."),
    ] = None,
    keep_masses: Annotated[
        str | None,
        typer.Option(
            help="Input-dependent keep rates to try, e.g. 0.5,0.9: SR keeps, of the k that --keep-rate allows, the "
            "fewest whose softmax mass reaches p (model.keep_rule=mass)."
        ),
    ] = None,
    aggregations: Annotated[
        str | None, typer.Option(help="lsa,mean,softmax: LSA vs a plain or softmax-weighted average.")
    ] = None,
    seeds: Annotated[str, typer.Option(help="Seeds; metrics are mean and std over them.")] = "42",
    dataset: DatasetOpt = DatasetName.msrvtt,
    data_root: DataRootOpt = None,
    annotations: AnnotationsOpt = None,
    split: Annotated[str, typer.Option(help="Split every variant is evaluated on.")] = "test",
    cache: CacheOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Grid folder; rerun with the same one to resume. Default: <workspace>/ablations/<model>."),
    ] = None,
    model: ModelOpt = defaults.MODEL,
    pretrained: PretrainedOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    freeze_backbone: FreezeOpt = False,
    skip_missing: SkipMissingOpt = False,
    train_list: TrainListOpt = "9k",
    device: DeviceOpt = defaults.DEVICE,
    json_out: JsonOpt = False,
) -> None:
    """Train and evaluate each variant (one setting changed from the base config), with every seed.

    With no grid option the grid is --components full,-sr,-lsa,-sdr,-textcond: 5 runs, about 8 minutes with
    tcmgc-tiny on sample_data/ on a 2-core CPU. Finished variants are skipped on a rerun. Writes ablation.csv and
    ablation.png (R@1 against keep rate, and against SDR alpha when varied) into the grid folder.
    """
    with handle_errors():
        from tcmgc_cli.ablation import ablate, grid, parse_seeds
        from tcmgc_cli.config import TrainConfig
        from tcmgc_cli.options import train_keys

        variants = grid(keep_rates, sdr_alphas, components, aggregations, keep_masses, similarities, sdr_rules)
        keys = train_keys(epochs, batch_size, lr, freeze_backbone=freeze_backbone)
        TrainConfig(**keys)  # the flags' values, checked before anything loads
        result = ablate(
            variants, parse_seeds(seeds), source(dataset, data_root, annotations, skip_missing, train_list),
            split=split, output=output, model=model, pretrained=pretrained, cache=cache, config=config,
            sets=set_ or [], train=keys, device=device,
            on_event=lambda msg: stderr.print(msg),
        )  # fmt: skip
        if json_out:
            print_json(result.rows())
        else:
            _render(result)


def _render(result: "Ablation") -> None:
    from rich import box
    from rich.table import Column, Table

    def pm(r: Any, k: str, fmt: str = ".1f") -> str:  # mean ± std over seeds (one seed: the value)
        return f"{r[k]:{fmt}}±{r[k + '_std']:{fmt}}" if len(r["seeds"]) > 1 else f"{r[k]:{fmt}}"

    summary = result.summary
    varied = [(k, name) for k, name in (("keep_rate", "r"), ("sdr_alpha", "alpha")) if summary[k].nunique() > 1]
    fixed = ", ".join(f"{name} {summary[k].iloc[0]:g}" for k, name in (("keep_rate", "r"), ("sdr_alpha", "alpha"))
                      if (k, name) not in varied)  # fmt: skip
    table = Table(Column("variant", no_wrap=True), *(name for _, name in varied), "t2v R@1", "R@5", "MdR", "pairs/s",
                  "score var", title=f"ablation ({result.folder}{'; ' + fixed if fixed else ''})",
                  box=box.SIMPLE_HEAD)  # fmt: skip
    for _, r in summary.iterrows():
        mark = (" *" if r["best"] else "") + (" †" if r["best_tradeoff"] else "")
        table.add_row(f"{r['variant']}{mark}", *(f"{r[k]:g}" for k, _ in varied), pm(r, "t2v_R@1"), pm(r, "t2v_R@5"),
                      pm(r, "t2v_MdR"), f"{r['pairs_per_s']:,.0f}", f"{r['score_variance']:.3f}")  # fmt: skip
    stdout.print(table)
    for effect in result.facts.get("sdr_effects", []):
        runs = ", ".join(f"{rule} {mean:.1f}±{std:.1f}" for rule, (mean, std) in effect["t2v_R@1"].items())
        hurt = ", ".join(effect["sdr_lowers_R@1"]) or "none"
        stdout.print(f"{effect['similarities']}: t2v R@1 {runs}; SDR lowers R@1 with: {hurt}", soft_wrap=True)
    if result.facts.get("sdr_correlation") is not None:
        stdout.print(
            f"Across the SDR runs, score variance and R@1 correlate with Pearson r = {result.facts['sdr_correlation']:.2f}."
        )
    folder = result.folder
    stdout.print(f"* best t2v R@1; † best trade-off (the fastest within one query of the best R@1 among keep rates). "
                 f"Wrote {folder / 'ablation.csv'}, {folder / 'ablation.png'} and {folder / 'ablation.json'}")  # fmt: skip

"""An ablation grid's variants: each axis varies one setting away from the base config (not a cross product).

Axes: keep rates, SDR weights, components (each "-x" removes one part, "+x" adds phrases, snippets or the hierarchy),
aggregations, input-dependent keep masses, and combinations of similarities each with SDR off and with each SDR rule.
Every value is checked by the model config's own rules before anything trains, and an error names the flag it came
from.

    variants = grid(keep_rates="0.05,0.5")   # full, keep_rate=0.05, keep_rate=0.5
"""

from dataclasses import dataclass, field
from typing import Any

from tcmgc_cli.config import SDR_RULES, SIMILARITIES, ModelConfig
from tcmgc_cli.errors import ConfigError

COMPONENTS: dict[str, dict[str, Any]] = {
    "full": {},
    "-sr": {"reorganize": False},
    "-lsa": {"aggregation": "mean"},
    "-sdr": {"sdr_alpha": 0.0},
    "-textcond": {"text_conditioning": False},
}
ADDABLE: dict[str, dict[str, Any]] = {  # "+x" adds a part ("+phrases+snippets" both)
    "phrases": {"phrases": True},
    "snippets": {"snippets": True},
    "clips": {"snippets": True},  # the earlier name of "+snippets"
    "hierarchy": {"hierarchy": True},  # a hierarchical interaction model on LVA's units (open question 3)
    "hierarchy-agnostic": {"hierarchy": True, "hierarchy_inputs": "agnostic"},  # ... on the temporal frames
}
DEFAULT_COMPONENTS = "full,-sr,-lsa,-sdr,-textcond"  # the grid with no grid option: about 8 minutes with tcmgc-tiny


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig keys
    components: str = "full"

    @property
    def slug(self) -> str:
        return self.name.replace("=", "-").replace(",", "_").lstrip("-").replace("/", "_") or "full"


def names(text: str | None) -> list[str]:
    """Comma-separated names."""
    return [x.strip() for x in text.split(",") if x.strip()] if text else []


def parse_floats(text: str | None, flag: str) -> list[float]:
    try:
        return [float(x) for x in names(text)]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated numbers, e.g. 0.05,0.1,0.5 (got {text!r}).") from None


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in names(text)] or [42]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}.") from None


def component(name: str) -> dict[str, Any]:
    """The overrides of a component: "-x" removes a part, "+x" (or "+x+y") adds parts."""
    if name in COMPONENTS:
        return COMPONENTS[name]
    parts = name.split("+")[1:] if name.startswith("+") else []
    if not parts or any(p not in ADDABLE for p in parts):
        valid = [*COMPONENTS, "+phrases", "+snippets", "+phrases+snippets", "+hierarchy", "+hierarchy-agnostic"]
        raise ConfigError(f"unknown component {name!r} in --components: use {', '.join(valid)}.")
    return {k: v for p in parts for k, v in ADDABLE[p].items()}


def parse_combinations(text: str | None) -> list[tuple[str, ...]]:
    """--similarities "vs,vw;vs,fw": combinations of the four similarities, separated by ';'."""
    if not text:
        return []
    combos = [tuple(names(c)) for c in text.split(";")]
    if any(not c for c in combos):
        raise ConfigError(f"--similarities {text!r} holds an empty combination: write e.g. \"vs,vw;vs,fw\" "
                          f"with names from {', '.join(SIMILARITIES)}.")  # fmt: skip
    unknown = sorted({n for c in combos for n in c} - set(SIMILARITIES))
    if unknown:
        raise ConfigError(f"unknown similarity {', '.join(unknown)} in --similarities: use {', '.join(SIMILARITIES)}.")
    return list(dict.fromkeys(combos))


def sdr_variants(combinations: list[tuple[str, ...]], rules: list[str]) -> list[Variant]:
    """Each combination with SDR off and with each SDR rule (the base config's weight)."""
    unknown = [r for r in rules if r not in SDR_RULES]
    if unknown:
        raise ConfigError(f"unknown SDR rule(s) {', '.join(unknown)} in --sdr-rules: use {', '.join(SDR_RULES)}.")
    out = []
    for combo in combinations:
        sims = ",".join(combo)
        out.append(Variant(f"sims={sims} sdr=off", {"similarities": combo, "sdr_alpha": 0.0}))
        out += [Variant(f"sims={sims} sdr={r}", {"similarities": combo, "sdr_rule": r}) for r in rules]
    if not combinations:
        out += [Variant(f"sdr_rule={r}", {"sdr_rule": r}) for r in rules if r != "variance"]
    return out


def _checked(variant: Variant, flag: str, value: object) -> Variant:
    """The variant, once the model config's own rules accept its settings (else one line naming the flag)."""
    try:
        ModelConfig.from_dict(variant.overrides)
    except ConfigError as err:
        raise ConfigError(f"{flag} {value}: {err}") from None
    return variant


def expand_variants(
    keep_rates: list[float], sdr_alphas: list[float], components: list[str], aggregations: list[str],
    keep_masses: list[float] | None = None, combinations: list[tuple[str, ...]] | None = None,
    sdr_rules: list[str] | None = None,
) -> list[Variant]:  # fmt: skip
    """The variants of the grid, "full" first; each axis value changes one setting of the base config."""
    variants = [Variant("full")]
    variants += [_checked(Variant(f"keep_rate={r:g}", {"keep_rate": r}), "--keep-rates", r) for r in keep_rates]
    variants += [_checked(Variant(f"sdr_alpha={a:g}", {"sdr_alpha": a}), "--sdr-alphas", a) for a in sdr_alphas]
    variants += [Variant(c, component(c), c) for c in components if c != "full"]
    variants += [_checked(Variant(f"aggregation={a}", {"aggregation": a}), "--aggregations", a) for a in aggregations]
    variants += [_checked(Variant(f"keep_mass={p:g}", {"keep_rule": "mass", "keep_mass": p}), "--keep-masses", p)
                 for p in keep_masses or []]  # fmt: skip
    if combinations or sdr_rules:
        variants += sdr_variants(combinations or [], sdr_rules or ["variance"])
    return list({v.name: v for v in variants}.values())


def grid(
    keep_rates: str | None = None, sdr_alphas: str | None = None, components: str | None = None,
    aggregations: str | None = None, keep_masses: str | None = None, similarities: str | None = None,
    sdr_rules: str | None = None,
) -> list[Variant]:  # fmt: skip
    """The variants that `tcmgc ablate`'s grid options (comma-separated text) ask for; none: DEFAULT_COMPONENTS."""
    if not any((keep_rates, sdr_alphas, components, aggregations, keep_masses, similarities, sdr_rules)):
        components = DEFAULT_COMPONENTS
    return expand_variants(
        parse_floats(keep_rates, "--keep-rates"), parse_floats(sdr_alphas, "--sdr-alphas"), names(components),
        names(aggregations), parse_floats(keep_masses, "--keep-masses"), parse_combinations(similarities),
        names(sdr_rules),
    )  # fmt: skip

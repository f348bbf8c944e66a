"""The [gtforge] section and how stage settings are resolved from luigi.cfg presets."""

from __future__ import annotations

from pathlib import Path

import luigi
import luigi.configuration

DEFAULTS = Path(__file__).resolve().parents[1] / "luigi.cfg"
# The names [gtforge] candidates accepts (tasks/candidates.py maps them to their stages).
ENHANCER_CANDIDATES = ("rcan_noise", "rcan_blur", "elan_noise", "elan_blur")
FUSED = "fused"


def _load_packaged_defaults() -> None:
    """Put the repository's luigi.cfg first (lowest priority) in luigi's config search path,
    so gtforge works from any directory while a local luigi.cfg still overrides it."""
    parser = luigi.configuration.LuigiConfigParser
    if str(DEFAULTS) not in parser._config_paths:
        parser._config_paths.insert(0, str(DEFAULTS))
        parser.reload()


_load_packaged_defaults()


# The sections each preset reads before [paper.<Stage>], first hit wins: `small` is `tiny` with
# trainings long enough to matter, so its sections name only what differs.
PRESETS = {"tiny": ("tiny",), "small": ("small", "tiny"), "paper": ()}


class gtforge(luigi.Config):  # noqa: N801  (the section name users write in luigi.cfg)
    preset = luigi.ChoiceParameter(choices=list(PRESETS))
    input_dir = luigi.Parameter()
    workdir = luigi.Parameter()
    out_dir = luigi.Parameter()
    device = luigi.Parameter(significant=False)
    threads = luigi.IntParameter(significant=False)  # torch threads per worker; 0: torch's
    precision = luigi.ChoiceParameter(choices=["auto", "fp32", "bf16"])
    channels_last = luigi.ChoiceParameter(choices=["auto", "true", "false"], significant=False)
    seed = luigi.IntParameter()
    scale = luigi.IntParameter()
    candidates = luigi.Parameter()
    references = luigi.Parameter(significant=False)  # clean photos: the build is measured
    evaluate = luigi.BoolParameter(significant=False)  # and SR networks trained on its targets
    iqa_weights = luigi.Parameter(significant=False)  # pyiqa weight files; empty: its cache
    chunk_photos = luigi.IntParameter(significant=False)  # photos per chunk task, on average
    training_set = luigi.Parameter(significant=False)  # a folder; empty: pinned at first build
    training_sample = luigi.IntParameter(significant=False)  # photos of it; 0: all

    def candidate_names(self) -> list[str]:
        return [c.strip() for c in self.candidates.split(",") if c.strip()]


def _paper_on_cuda(config: gtforge) -> bool:
    """Whether `auto` precision and layout mean on: the paper preset on a CUDA device."""
    if config.preset != "paper":
        return False
    if config.device == "auto":  # only then is torch asked (and imported)
        import torch

        return torch.cuda.is_available()
    return config.device.startswith("cuda")


def network_precision() -> tuple[str, bool]:
    """The [gtforge] precision ('fp32' or 'bf16') and channels_last with `auto` resolved."""
    config = gtforge()
    auto = _paper_on_cuda(config)
    dtype = ("bf16" if auto else "fp32") if config.precision == "auto" else config.precision
    layout = auto if config.channels_last == "auto" else config.channels_last == "true"
    return dtype, layout


def preset_setting(stage: str, name: str, param: luigi.Parameter, variant: str | None = None):
    """The value of setting `name` of `stage` from the preset's sections ([small.<stage>], then
    [tiny.<stage>] for `small`: PRESETS), else [paper.<stage>]; with a `variant` (e.g. a
    backbone), [<p>.<stage>.<variant>] comes before [<p>.<stage>] in each."""
    cfg = luigi.configuration.get_config()
    sections = [f"{p}.{stage}{suffix}" for p in (*PRESETS[gtforge().preset], "paper")
                for suffix in ((f".{variant}",) if variant else ()) + ("",)]
    for section in sections:
        if cfg.has_option(section, name):
            return param.parse(cfg.get(section, name))
    raise KeyError(f"luigi.cfg has no default for {stage}.{name}: add it to [paper.{stage}]")


def section(name: str) -> dict[str, str]:
    """A whole luigi.cfg section as raw strings (e.g. a degradation recipe)."""
    cfg = luigi.configuration.get_config()
    if not cfg.has_section(name):
        raise KeyError(f"luigi.cfg has no [{name}] section")
    return dict(cfg.items(name))

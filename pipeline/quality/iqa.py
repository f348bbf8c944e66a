"""Image-quality metrics (pyiqa), created once per process, offline, with known direction.

`create_metric(name, device, as_loss)` is the one way gtforge builds a pyiqa metric:

- pyiqa is imported lazily (the import costs seconds and ~0.8 GB);
- a metric is built once per (name, device, as_loss) and reused (`lru_cache`);
- NIQE works offline: its pristine-model parameters are taken from the installed `basicsr`
  package (`basicsr/metrics/niqe_pris_params.npz`), written once as `niqe_modelparameters.mat`
  into the weights folder and handed to pyiqa;
- no download is ever attempted: a metric whose weight file is absent raises `MissingWeightsError`
  naming the exact file and the folder to put it in.

Weights folder: the one given to `use_weights_dir` ([gtforge] iqa_weights), else
`$GTFORGE_IQA_WEIGHTS` if set, else pyiqa's own cache `$TORCH_HOME/hub/pyiqa`
(`torch.hub.get_dir()/pyiqa`), read at call time.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.image.conversions import to_tensor

NIQE_FILE = "niqe_modelparameters.mat"
# Patches per forward pass that scored fastest on 2 CPU cores (bench/bench_iqa.py); others: 8.
BATCH_SIZES = {"niqe": 16, "piqe": 16, "gmsd": 64, "psnr": 64, "ssim": 1, "entropy": 1}

_download_lock = threading.Lock()


class MissingWeightsError(FileNotFoundError):
    """A pyiqa metric needs a weight file that is not on disk (and gtforge never downloads)."""

    def __init__(self, metric: str, file: str, folder: str, url: str | None = None,
                 how: str | None = None):
        self.metric, self.file, self.folder, self.url = metric, file, folder, url
        where = f" (published at {url})" if url else ""
        how = how or f"put it in {folder} as {os.path.join(folder, file)}{where}"
        super().__init__(
            f"IQA metric {metric!r} needs the weight file {file!r}, which is missing: {how}; "
            f"or choose offline metrics (niqe, piqe, entropy, ssim, psnr, ...). "
            f"gtforge does not download weights."
        )


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures: `mode` 'NR' (no-reference) or 'FR' (full-reference, needs the
    original), `lower_better` (True for NIQE, PIQE, LPIPS, ...), `score_range` as pyiqa states
    it (a string such as '0, 100' or '~0, ~1')."""

    name: str
    mode: str
    lower_better: bool
    score_range: str | None

    @property
    def full_reference(self) -> bool:
        return self.mode == "FR"


_configured_weights: list[Path] = []  # set by use_weights_dir


def use_weights_dir(folder: Path | None) -> None:
    """Read weight files from `folder` from now on in this process (None: the default)."""
    _configured_weights[:] = [Path(folder)] if folder else []


def weights_dir() -> Path:
    """Folder pyiqa weight files are read from (not created here)."""
    if _configured_weights:
        return _configured_weights[0]
    env = os.environ.get("GTFORGE_IQA_WEIGHTS")
    return Path(env) if env else Path(torch.hub.get_dir()) / "pyiqa"


def _pyiqa():
    import pyiqa  # noqa: PLC0415 - lazy on purpose: import costs seconds

    return pyiqa


def metric_info(name: str) -> MetricInfo:
    """Direction, mode and range of a pyiqa metric, without building it (imports pyiqa)."""
    _pyiqa()
    from pyiqa.default_model_configs import DEFAULT_CONFIGS  # noqa: PLC0415

    if name not in DEFAULT_CONFIGS:
        raise KeyError(f"unknown IQA metric {name!r}; pyiqa knows {sorted(DEFAULT_CONFIGS)}")
    cfg = DEFAULT_CONFIGS[name]
    return MetricInfo(
        name=name,
        mode=cfg.get("metric_mode", "NR"),
        lower_better=bool(cfg.get("lower_better", False)),
        score_range=cfg.get("score_range"),
    )


def niqe_params_file(folder: Path | None = None) -> Path:
    """Path of NIQE's pristine parameters as a .mat (keys mu_prisparam (1,36), cov_prisparam
    (36,36)); written once, atomically, from basicsr's `niqe_pris_params.npz` if absent."""
    folder = Path(folder) if folder is not None else weights_dir()
    target = folder / NIQE_FILE
    if target.is_file():
        return target
    try:
        import basicsr  # noqa: PLC0415

        source = Path(basicsr.__file__).parent / "metrics" / "niqe_pris_params.npz"
    except ImportError:
        source = None
    if source is None or not source.is_file():
        raise MissingWeightsError("niqe", NIQE_FILE, str(folder))
    import scipy.io  # noqa: PLC0415

    with np.load(source) as params:
        mat = {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{NIQE_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    scipy.io.savemat(tmp, mat)
    os.replace(tmp, target)
    return target


@contextlib.contextmanager
def _no_downloads(metric: str, folder: Path) -> Iterator[None]:
    """Make every download path pyiqa can take raise MissingWeightsError instead."""
    import pyiqa.utils.download_util as dl  # noqa: PLC0415

    def refuse(url: str, dst: str, *args, **kwargs):
        raise MissingWeightsError(metric, os.path.basename(dst), os.path.dirname(dst), url)

    def refuse_gdrive(file_id: str, save_path: str, *args, **kwargs):
        raise MissingWeightsError(metric, os.path.basename(save_path),
                                  os.path.dirname(save_path), f"google drive id {file_id}")

    def refuse_url(url, *args, **kwargs):
        url = getattr(url, "full_url", url)
        raise MissingWeightsError(metric, os.path.basename(str(url)), str(folder), str(url))

    saved = [(dl, "download_url_to_file", refuse), (dl, "download_file_from_google_drive",
                                                     refuse_gdrive),
             (torch.hub, "download_url_to_file", refuse), (urllib.request, "urlopen", refuse_url)]
    # pyiqa's cache folder, read at call time (some arch modules copied it at import)
    saved += [(module, "DEFAULT_CACHE_DIR", str(folder))
              for name, module in list(sys.modules.items())
              if name.startswith("pyiqa.") and hasattr(module, "DEFAULT_CACHE_DIR")]
    clip = sys.modules.get("pyiqa.archs.clip_model")
    if clip is not None and hasattr(clip, "_download"):
        saved.append((clip, "_download", _cached_only_download(metric, clip._download)))
    try:
        import huggingface_hub.constants as hf_constants  # noqa: PLC0415

        saved.append((hf_constants, "HF_HUB_OFFLINE", True))
    except ImportError:
        pass
    try:
        import timm.models._hub as timm_hub  # noqa: PLC0415 - timm backbones (topiq, maniqa)
    except ImportError:
        timm_hub = None
    if timm_hub is not None:
        saved.append((timm_hub, "download_url_to_file", refuse))
        if timm_hub.hf_hub_download is not None:
            saved.append((timm_hub, "hf_hub_download",
                          _hub_cached_only(metric, timm_hub.hf_hub_download)))
    with _download_lock:
        old = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in saved]
        for obj, attr, value in saved:
            setattr(obj, attr, value)
        try:
            yield
        finally:
            for obj, attr, value in old:
                setattr(obj, attr, value)


def _cached_only_download(metric: str, download):
    """pyiqa's CLIP `_download(url, root)` that only returns a file already in `root`."""

    def cached(url: str, root: str):
        if os.path.isfile(os.path.join(root, os.path.basename(url))):
            return download(url, root)
        raise MissingWeightsError(metric, os.path.basename(url), root, url)

    return cached


def _hub_cached_only(metric: str, hf_hub_download):
    """hf_hub_download that only reads the local HuggingFace cache; a miss names repo and file."""

    def download(repo_id: str, filename: str, *args, **kwargs):
        try:
            return hf_hub_download(repo_id, filename, *args, **kwargs)
        except Exception as err:
            if "LocalEntryNotFound" not in type(err).__name__ and "offline" not in str(err):
                raise
            from huggingface_hub.constants import HF_HUB_CACHE  # noqa: PLC0415

            raise MissingWeightsError(
                metric, filename, HF_HUB_CACHE, f"https://huggingface.co/{repo_id}",
                how=f"it comes from the HuggingFace repo {repo_id}; on a machine with network "
                f"run `huggingface-cli download {repo_id} {filename}` and copy its HuggingFace "
                f"cache into {HF_HUB_CACHE} (or point HF_HUB_CACHE at a copy)") from err

    return download


def create_metric(name: str, device: torch.device | str = "cpu", as_loss: bool = False):
    """A pyiqa metric (`pyiqa.InferenceModel`), built once per process per (name, device, as_loss).

    Inputs to the returned metric: float tensors in [0,1], NCHW RGB (FR metrics take
    `(candidate, reference)`); output: a tensor of N scores (see `metric_info` for direction).
    Raises MissingWeightsError (naming the file and folder) when weights are absent.
    """
    return _create_metric(name, str(torch.device(device)), bool(as_loss), str(weights_dir()))


@functools.cache
def _create_metric(name: str, device: str, as_loss: bool, folder: str):
    pyiqa = _pyiqa()
    metric_info(name)  # unknown name -> KeyError listing the known ones
    kwargs = {}
    if name == "niqe":
        kwargs["pretrained_model_path"] = str(niqe_params_file(Path(folder)))
    chatter = io.StringIO()  # pyiqa prints "Downloading: ..." before our refusal: hold it back
    with _no_downloads(name, Path(folder)), contextlib.redirect_stdout(chatter):
        metric = pyiqa.create_metric(name, as_loss=as_loss, device=torch.device(device), **kwargs)
    if not as_loss:
        metric.requires_grad_(False)
    return metric


def clear_metric_cache() -> None:
    """Forget every created metric (tests; freeing memory)."""
    _create_metric.cache_clear()


@torch.no_grad()
def score_images(name: str, images: np.ndarray, reference: np.ndarray | None = None,
                 device: torch.device | str = "cpu", batch_size: int | None = None) -> np.ndarray:
    """Score uint8 RGB patches (N,H,W,3) with metric `name`, `batch_size` at a time (default:
    BATCH_SIZES, else 8).

    Full-reference metrics need `reference` (N,H,W,3), the image each patch is compared with.
    Returns float32 (N,) raw scores in the metric's own units (see `metric_info`).
    """
    info = metric_info(name)
    if info.full_reference and reference is None:
        raise ValueError(f"IQA metric {name!r} is full-reference: pass the reference images")
    metric = create_metric(name, device)
    batch_size = batch_size or BATCH_SIZES.get(name, 8)
    images = np.asarray(images)
    out = np.empty(len(images), np.float32)
    for start in range(0, len(images), batch_size):
        batch = to_tensor(images[start:start + batch_size], device)
        if info.full_reference:
            ref = to_tensor(np.asarray(reference)[start:start + batch_size], device)
            value = metric(batch, ref)
        else:
            value = metric(batch)
        out[start:start + len(batch)] = value.detach().float().reshape(-1).cpu().numpy()
    return out

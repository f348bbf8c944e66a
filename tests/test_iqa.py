import socket

import numpy as np
import pytest
import scipy.io
import torch

from pipeline.image.conversions import to_tensor
from pipeline.quality import iqa


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty TORCH_HOME (so pyiqa's weight folder is empty) and no network at all."""
    monkeypatch.delenv("GTFORGE_IQA_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("the IQA wrapper tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    iqa.clear_metric_cache()
    yield tmp_path / "torch" / "hub" / "pyiqa"
    iqa.clear_metric_cache()


def _texture(n: int = 2, size: int = 96) -> np.ndarray:
    import skimage.data

    return np.stack([skimage.data.astronaut()[100 + 40 * i:100 + 40 * i + size, 150:150 + size]
                     for i in range(n)])


def test_niqe_works_offline_from_basicsr_parameters(empty_cache):
    metric = iqa.create_metric("niqe")
    params = scipy.io.loadmat(empty_cache / iqa.NIQE_FILE)
    assert params["mu_prisparam"].shape == (1, 36) and params["cov_prisparam"].shape == (36, 36)
    assert iqa.create_metric("niqe") is metric  # built once per process
    assert iqa.create_metric("niqe", as_loss=True) is not metric
    patches = _texture()
    scores = iqa.score_images("niqe", patches, batch_size=1)
    assert np.isfinite(scores).all() and scores.shape == (2,)
    np.testing.assert_allclose(iqa.score_images("niqe", patches, batch_size=2), scores, rtol=1e-5)
    assert iqa.metric_info("niqe").lower_better and not iqa.metric_info("entropy").lower_better
    assert iqa.metric_info("gmsd").full_reference and not iqa.metric_info("piqe").full_reference


def test_missing_weights_names_file_and_folder(empty_cache):
    from pyiqa.archs.musiq_arch import default_model_urls

    expected = default_model_urls["koniq10k"].rsplit("/", 1)[-1]
    with pytest.raises(iqa.MissingWeightsError) as err:
        iqa.create_metric("musiq")
    assert err.value.file == expected and expected in str(err.value)
    assert str(empty_cache) in str(err.value) and err.value.folder == str(empty_cache)


def test_weights_put_where_the_error_says_are_loaded(empty_cache):
    with pytest.raises(iqa.MissingWeightsError) as err:
        iqa.create_metric("brisque")
    # A made-up SVM in the published format (support-vector coefficients, support vectors).
    gen = torch.Generator().manual_seed(0)
    path = f"{err.value.folder}/{err.value.file}"
    torch.save((torch.rand(4, generator=gen), torch.rand(4, 36, generator=gen)), path)
    scores = iqa.score_images("brisque", _texture(1))
    assert np.isfinite(scores).all()


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((8, 8, 3), np.float32))
    tensor = to_tensor(np.full((2, 4, 5, 3), 255, np.uint8))
    assert tensor.shape == (2, 3, 4, 5) and float(tensor.max()) == 1.0
    with pytest.raises(ValueError, match="full-reference"):
        iqa.score_images("gmsd", np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(KeyError, match="unknown IQA metric"):
        iqa.metric_info("no_such_metric")


def test_the_weights_folder_is_the_configured_one(empty_cache, build_env, tmp_path):
    """[gtforge] iqa_weights, applied when a stage runs, is where a missing file is looked for."""
    from tasks.score_patches import ScorePatches

    folder = tmp_path / "iqa-weights"
    build_env.set("gtforge", "iqa_weights", folder)
    try:
        ScorePatches().set_up_runtime()
        with pytest.raises(iqa.MissingWeightsError) as err:
            iqa.create_metric("musiq")
        assert err.value.folder == str(folder)
    finally:
        iqa.use_weights_dir(None)
    assert iqa.weights_dir() == empty_cache

import dataclasses
import json

import cv2
import numpy as np
import pytest
from scipy import stats

from pipeline.image import degrade as D
from pipeline.image.ingest import read_images
from pipeline.store.imageio import image_path, read_rgb
from tasks.config import section
from tasks.degrade import DRAWS_JSON, DegradeLR, load_recipe
from tasks.train_enhancer import TrainEnhancer
from tests.conftest import run_tasks

RECIPES = ("noise", "blur", "sr")


@pytest.fixture(scope="module")
def recipes() -> dict[str, D.Recipe]:
    return {name: load_recipe(name) for name in RECIPES}


def photo(h: int = 96, w: int = 128) -> np.ndarray:
    """A crop of a real photo."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[40:40 + h, 200:200 + w])


def edge_image(h: int = 96, w: int = 128) -> np.ndarray:
    """Flat 70 | flat 180 with a vertical edge at w/2, and a top band of all 256 levels (so
    the Poisson noise sees a normal 8-bit image)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2], img[:, w // 2:] = 70, 180
    img[:16] = (np.arange(16 * w) % 256).reshape(16, w, 1)
    return img


def test_recipes_in_luigi_cfg_parse(recipes):
    assert recipes["noise"].noise_sigma == (6.5, 13.0)
    assert recipes["blur"].blur_sigma == (0.5, 1.0)
    assert recipes["sr"].final_scale == 4 and recipes["sr"].kernel_sizes == (3, 5, 7, 9)
    assert recipes["noise"].jpeg_quality == (80, 95)
    assert isinstance(recipes["noise"].jpeg_quality[0], int)
    assert D.Recipe.from_section(section("degradation.noise")) == recipes["noise"]


@pytest.mark.parametrize("field,text,match", [
    ("kernel_sizes", "[3, 4]", "odd"),
    ("iso_prob", "1.5", "probability"),
    ("jpeg_quality", "[95, 80]", "low <= high"),
    ("jpeg_quality", "[80.5, 90]", "integer"),
    ("resize_modes", '["nearest"]', "choose from"),
    ("resize_probs", "[0.5, 0.5, 0.5]", "summing to 1"),
    ("noise_sigma", "[1, 2, 3]", "expected 2 values"),
    ("blur_sigma", "not json", "blur_sigma"),
    ("final_scale", '"4"', "expected a number"),
])
def test_bad_recipe_values_are_named(field, text, match):
    values = {**section("degradation.noise"), field: text}
    with pytest.raises(D.RecipeError, match=match) as err:
        D.Recipe.from_section(values, "degradation.noise")
    assert "[degradation.noise]" in str(err.value) and field in str(err.value)


def test_missing_and_unknown_recipe_fields_are_named():
    values = dict(section("degradation.noise"))
    del values["gaussian_prob"]
    values["noise_sgima"] = "[1, 2]"
    with pytest.raises(D.RecipeError, match="missing gaussian_prob; unknown noise_sgima"):
        D.Recipe.from_section(values, "degradation.noise")


@pytest.mark.parametrize("name", RECIPES)
def test_same_seed_gives_identical_bytes_other_seed_differs(recipes, name):
    img = photo()
    a = D.degrade(img, recipes[name], np.random.default_rng(7))
    b = D.degrade(img, recipes[name], np.random.default_rng(7))
    c = D.degrade(img, recipes[name], np.random.default_rng(8))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("name,shape", [("noise", (101, 67, 3)), ("blur", (101, 67, 3)),
                                        ("sr", (25, 16, 3))])
def test_output_size_and_dtype(recipes, name, shape):
    img = photo(101, 67)
    for seed in range(4):
        out = D.degrade(img, recipes[name], np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == shape


def test_bad_input_is_refused(recipes):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        D.degrade(photo().astype(np.float32), recipes["noise"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="final_scale=4"):
        D.degrade(photo(3, 30), recipes["sr"], np.random.default_rng(0))


def _noise_and_sharpness(recipe: D.Recipe, seeds: int = 12) -> tuple[float, float]:
    """Mean over seeds of: std of (output - input) on the two flat areas (0-255), and the
    steepest step of the row-averaged edge profile as a fraction of the edge height."""
    img = edge_image()
    clean = img[32:-8].astype(np.float64)
    noise, sharp = [], []
    for seed in range(seeds):
        body = D.degrade(img, recipe, np.random.default_rng(seed))[32:-8].astype(np.float64)
        diff = body - clean
        noise.append(np.concatenate([diff[:, 8:52], diff[:, 76:120]], axis=1).std())
        sharp.append(np.abs(np.diff(body.mean(axis=(0, 2)))).max() / 110.0)
    return float(np.mean(noise)), float(np.mean(sharp))


def test_noise_recipe_is_noisier_and_blur_recipe_blurrier(recipes):
    noise_n, noise_s = _noise_and_sharpness(recipes["noise"])
    blur_n, blur_s = _noise_and_sharpness(recipes["blur"])
    assert noise_n > 2.0 * blur_n  # measured here: ~4.6 vs ~1.4
    assert noise_s > 1.25 * blur_s  # measured here: ~0.75 vs ~0.49
    # The statistics follow the ranges, not the recipe names: swap them and the order flips.
    swapped = dataclasses.replace(recipes["blur"], noise_sigma=recipes["noise"].noise_sigma,
                                  poisson_scale=recipes["noise"].poisson_scale,
                                  blur_sigma=recipes["noise"].blur_sigma)
    swapped_n, swapped_s = _noise_and_sharpness(swapped)
    assert swapped_n > 2.0 * blur_n and swapped_s > 1.25 * blur_s


def _clean_recipe(noise: D.Recipe, **changes) -> D.Recipe:
    """Only JPEG left: a near-delta 3x3 Gaussian, no resize, no noise."""
    return dataclasses.replace(noise, kernel_sizes=(3,), iso_prob=1.0, blur_sigma=(0.1, 0.1),
                               sinc_prob=0.0, resize_probs=(0.0, 0.0, 1.0), gaussian_prob=1.0,
                               noise_sigma=(0.0, 0.0), **changes)


@pytest.mark.parametrize("quality", [30, 90])
def test_jpeg_quality_is_honoured(recipes, quality):
    img = photo()
    out = D.degrade(img, _clean_recipe(recipes["noise"], jpeg_quality=(quality, quality)),
                    np.random.default_rng(0))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    expected = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out, expected)
    other = D.degrade(img, _clean_recipe(recipes["noise"], jpeg_quality=(60, 60)),
                      np.random.default_rng(0))
    assert not np.array_equal(out, other)


def test_draws_stay_in_the_recipe_ranges(recipes):
    r = recipes["noise"]
    rng = np.random.default_rng(0)
    draws = [D.draw(r, rng) for _ in range(2000)]
    assert {d.kernel_size for d in draws} == set(r.kernel_sizes)
    assert all(type(d.jpeg_quality) is int and 80 <= d.jpeg_quality <= 95 for d in draws)
    assert {d.jpeg_quality for d in draws} == set(range(80, 96))
    gauss = [d.noise_level for d in draws if d.noise == "gaussian"]
    poisson = [d.noise_level for d in draws if d.noise == "poisson"]
    assert 6.5 <= min(gauss) and max(gauss) <= 13 and 0.45 <= min(poisson) and max(poisson) <= 0.9
    gaussians = [d for d in draws if d.kernel != "sinc"]
    assert all(0.1 <= d.sigma_x <= 0.5 and 0.1 <= d.sigma_y <= 0.5 for d in gaussians)
    assert all(np.pi / 3 - 1e-6 <= d.omega <= np.pi for d in draws if d.kernel == "sinc")
    scales = {k: [d.resize_scale for d in draws if d.resize == k] for k in D.RESIZE_DIRECTIONS}
    assert all(1.0 <= s <= 1.1 for s in scales["up"]) and set(scales["keep"]) == {1.0}
    assert all(0.9 <= s <= 1.0 for s in scales["down"])
    share = lambda pred: np.mean([pred(d) for d in draws])  # noqa: E731
    assert abs(share(lambda d: d.kernel == "sinc") - 0.1) < 0.03
    assert abs(share(lambda d: d.kernel == "iso") - 0.9 * 0.7) < 0.04
    assert abs(share(lambda d: d.resize == "down") - 0.85) < 0.03
    assert abs(share(lambda d: d.noise == "gaussian") - 0.5) < 0.04
    assert abs(share(lambda d: d.gray_noise) - 0.1) < 0.03


def test_kernels_are_normalised_and_oriented():
    iso = D.gaussian_kernel(7, 0.8, 0.8, 0.3)
    taps = D.gaussian_1d(7, 0.8)
    np.testing.assert_allclose(iso, np.outer(taps, taps), atol=1e-7)
    wide_x = D.gaussian_kernel(7, 1.5, 0.4, 0.0)
    assert wide_x[3].sum() > wide_x[:, 3].sum()  # spread along x (a row)
    np.testing.assert_allclose(D.gaussian_kernel(7, 1.5, 0.4, np.pi / 2), wide_x.T, atol=1e-7)
    sinc = D.sinc_kernel(7, 1.2)
    assert abs(sinc.sum() - 1) < 1e-5 and np.allclose(sinc, sinc.T) and sinc.min() < 0
    for k in (iso, wide_x, sinc):
        assert k.dtype == np.float32 and abs(float(k.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("lam_level,vals", [(1, 256), (6, 256), (60, 256), (255, 256),
                                            (3, 1), (200, 64)])
def test_poisson_sampler_has_the_poisson_distribution(lam_level, vals):
    levels = np.full(40000, lam_level, np.uint8)
    x = D.poisson_counts(levels, vals, np.random.default_rng(lam_level))
    lam = lam_level * vals / 255
    support = np.arange(int(lam + 8 * np.sqrt(lam) + 10))
    expected = stats.poisson.pmf(support, lam) * levels.size
    observed = np.bincount(x, minlength=support.size)[:support.size]
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, max(keep.sum() - 1, 1)) > 1e-3
    assert abs(x.mean() - lam) < 5 * np.sqrt(lam / levels.size) + 1e-9


FIELD_CHANGES = {
    "kernel_sizes": "[3, 5]", "iso_prob": "0.6", "blur_sigma": "[0.2, 0.5]",
    "sinc_prob": "0.2", "sinc_omega": "[1.5, 3.0]", "resize_probs": "[0.2, 0.75, 0.05]",
    "resize_range": "[0.8, 1.1]", "resize_modes": '["area", "bicubic"]',
    "gaussian_prob": "0.4", "noise_sigma": "[20, 30]", "poisson_scale": "[0.4, 0.9]",
    "gray_noise_prob": "0.3", "jpeg_quality": "[70, 95]", "final_scale": "1.0",
}


def test_every_recipe_field_is_listed():
    assert set(FIELD_CHANGES) == {f.name for f in dataclasses.fields(D.Recipe)}


def _enhancer(degradation):
    return TrainEnhancer(backbone="rcan", degradation=degradation)


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_each_recipe_field_changes_the_key(build_env, field):
    """The enhancers degrade on the fly: their keys follow their recipe's values."""
    base = _enhancer("noise").key
    blur_base, lr_base = _enhancer("blur").key, DegradeLR().key
    value = FIELD_CHANGES[field]
    if field == "final_scale":  # 1 -> 1.0 is the same recipe; 2 is not
        build_env.set("degradation.noise", field, value)
        assert _enhancer("noise").key == base
        value = "2"
    build_env.set("degradation.noise", field, value)
    assert _enhancer("noise").key != base
    # the other recipes did not change
    assert (_enhancer("blur").key, DegradeLR().key) == (blur_base, lr_base)
    build_env.set("degradation.sr", field, value)
    assert DegradeLR().key != lr_base


@pytest.mark.parametrize("fixed,change", [
    ({"gaussian_prob": 1.0}, {"noise_sigma": (20.0, 30.0)}),
    ({"gaussian_prob": 0.0}, {"poisson_scale": (2.0, 3.0)}),
    ({"sinc_prob": 0.0}, {"blur_sigma": (1.5, 2.0)}),
    ({"sinc_prob": 1.0}, {"sinc_omega": (1.1, 1.2)}),
    ({}, {"jpeg_quality": (40, 50)}),
    ({"resize_probs": (0.0, 1.0, 0.0)}, {"resize_range": (0.5, 1.0)}),
])
def test_recipe_fields_change_the_output(recipes, fixed, change):
    img, r = photo(), dataclasses.replace(recipes["noise"], **fixed)
    base = D.degrade(img, r, np.random.default_rng(3))
    out = D.degrade(img, dataclasses.replace(r, **change), np.random.default_rng(3))
    assert not np.array_equal(out, base)


def test_stage_settings_change_the_key(build_env):
    assert _enhancer("noise").key != _enhancer("blur").key
    lr = DegradeLR().key
    for key, value in section("degradation.sr").items():
        build_env.set("degradation.sr_copy", key, value)
    assert DegradeLR(recipe="sr_copy").key != lr  # another recipe name, same values
    build_env.set("gtforge", "scale", 2)
    assert DegradeLR().key != lr


def test_degrade_lr_refuses_a_final_scale_other_than_scale(build_env, tmp_path):
    build_env.set("degradation.sr", "final_scale", "2")
    with pytest.raises(ValueError, match=r"final_scale = 2 but \[gtforge\] scale = 4"):
        DegradeLR().build(tmp_path)


def test_degrade_lr_builds_on_the_corpus(build_env):
    lr = DegradeLR()
    run_tasks(lr)
    hr_dir = lr.input_dir("hr")
    images = read_images(hr_dir)
    recipe = load_recipe("sr")
    for img in images:
        hr = read_rgb(image_path(hr_dir, img.id))
        out = read_rgb(image_path(lr.out_dir, img.id))
        assert out.shape == (img.height // 4, img.width // 4, 3)
        again = D.degrade(hr, recipe, np.random.default_rng(lr.seed_for(img.id)))
        np.testing.assert_array_equal(out, again)
    draws = json.loads((lr.out_dir / DRAWS_JSON).read_text())
    assert set(draws) == {img.id for img in images}


def _identity_recipe(final_scale: int, mode: str) -> D.Recipe:
    """No blur (a 1-tap kernel), no resize, no noise, JPEG 100: only the geometry is left."""
    return D.Recipe(kernel_sizes=(1,), iso_prob=1.0, blur_sigma=(0.1, 0.1), sinc_prob=0.0,
                    sinc_omega=(1.0, 1.0), resize_probs=(0.0, 0.0, 1.0), resize_range=(1.0, 1.0),
                    resize_modes=(mode,), gaussian_prob=1.0, noise_sigma=(0.0, 0.0),
                    poisson_scale=(0.0, 0.0), gray_noise_prob=0.0, jpeg_quality=(100, 100),
                    final_scale=final_scale)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_lr_stays_aligned_with_the_hr_up_to_the_far_edge(mode):
    """Stripes 4 HR pixels wide on a photo of odd width (1003) and height: LR column j must
    be the block of HR columns 4j..4j+3 all the way to the right edge (resizing 1003 px
    straight to 250 drifts by half an LR pixel there)."""
    h, w = 301, 1003
    cols = np.where((np.arange(w) // 4) % 2 == 0, 230, 20).astype(np.uint8)
    hr = np.repeat(np.repeat(cols[None, :, None], h, axis=0), 3, axis=2)
    lr = D.degrade(hr, _identity_recipe(4, mode), np.random.default_rng(0))
    assert lr.shape == (h // 4, w // 4, 3)
    expected = np.where(np.arange(w // 4) % 2 == 0, 230, 20)
    assert np.abs(lr[..., 1].astype(int) - expected).max() <= 2  # old code: 156 to 233


def test_the_last_resize_reuses_the_first_resize_mode(recipes):
    """HGGT: one mode is drawn and used for the random resize and for the resize to the
    output size."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        d = D.draw(recipes["sr"], rng)
        assert not hasattr(d, "back_mode") and d.resize_mode in recipes["sr"].resize_modes
    assert recipes["sr"].resize_probs == (0.1, 0.85, 0.05)

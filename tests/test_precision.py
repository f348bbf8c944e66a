import numpy as np
import pytest
import torch

from models.rcan import RCAN
from pipeline.store.seeding import rng
from pipeline.train import sr
from pipeline.train.precision import FP32, Precision
from tasks.base import Stage
from tasks.config import network_precision
from tasks.train_sr import TrainSR

# bf16 keeps 8 bits of mantissa: a forward pass through a few convolutions lands within a few
# grey levels of float32. Measured on this RCAN (2 groups x 2 blocks, 16 features, random
# weights with a non-zero tail): max 0.006, mean 0.0006 on the 0-1 scale.
BF16_MAX, BF16_MEAN = 4 / 255, 0.5 / 255


def _rcan() -> RCAN:
    torch.manual_seed(0)
    model = RCAN(n_feats=16, n_groups=2, n_blocks=2, reduction=4)
    torch.nn.init.normal_(model.tail.weight, std=0.05)  # not the identity start
    return model.eval()


def test_bf16_inference_is_within_a_stated_tolerance_of_fp32():
    model, x = _rcan(), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32 = FP32.forward(model, x)
        bf16 = Precision("bf16", channels_last=True).forward(model, x)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # it did run in bf16
    error = (bf16 - fp32).abs()
    assert error.max() < BF16_MAX and error.mean() < BF16_MEAN


def test_a_short_bf16_training_lowers_its_loss():
    precision = Precision("bf16", channels_last=True)
    training = sr.build_training(2, {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}, 2e-3,
                                 seed=0, precision=precision)
    hr = torch.from_numpy(rng("bf16-train").random((4, 3, 32, 32), dtype=np.float32))
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    losses = [training.step(i, lr, hr)["l1"] for i in range(40)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert all(p.dtype == torch.float32 for p in training.model.parameters())  # fp32 master


def test_precision_defaults_and_key(build_env):
    assert network_precision() == ("fp32", False)  # tiny preset on the CPU
    build_env.set("gtforge", "preset", "paper")
    assert network_precision() == ("fp32", False)  # still the CPU
    build_env.set("gtforge", "device", "cuda")
    assert network_precision() == ("bf16", True)
    build_env.set("gtforge", "preset", "tiny")
    build_env.set("gtforge", "device", "cpu")
    key = TrainSR().key
    build_env.set("gtforge", "precision", "bf16")
    assert TrainSR().key != key and TrainSR().settings["network_precision"] == "bf16"
    build_env.set("gtforge", "channels_last", "true")
    assert TrainSR().network_precision == Precision("bf16", True)
    assert "network_precision" not in Stage.settings.func(_LightStage())  # networks only
    from tasks.train_judge import TrainJudge  # its own `precision` is the vote calibration's

    assert TrainJudge().network_precision == Precision("bf16", True)
    assert TrainJudge().settings["precision"] == 0.9


class _LightStage(Stage):
    def requires(self):
        return []


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16'"):
        Precision("fp16")

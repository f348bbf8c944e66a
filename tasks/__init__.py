"""gtforge's Luigi tasks, one module per stage. `luigi --module tasks BuildDataset` finds them."""

from tasks.config import gtforge
from tasks.degrade import DegradeLR
from tasks.enhance import EnhanceHR
from tasks.evaluate import EvaluateTargets, MeasureTruth
from tasks.fuse import FuseGT
from tasks.ingest import IngestHR
from tasks.judge_pool import JudgePool
from tasks.mask_generator import TrainMaskGenerator
from tasks.publish import BuildDataset, PublishDataset
from tasks.report import Report
from tasks.score_patches import ScorePatches
from tasks.select_patches import SelectPatches
from tasks.super_resolve import SuperResolveGT
from tasks.train_enhancer import TrainEnhancer
from tasks.train_judge import TrainJudge
from tasks.train_sr import LoadSR, TrainSR
from tasks.train_vqvae import TrainVQVAE2
from tasks.vqvae_degrade import VQVAEDegradeLR
from tasks.write_manifest import WriteManifest
from tasks.write_shards import WriteShards

__all__ = [
    "BuildDataset", "DegradeLR", "EnhanceHR", "EvaluateTargets", "FuseGT",
    "IngestHR", "JudgePool", "LoadSR", "MeasureTruth", "PublishDataset", "Report", "ScorePatches",
    "SelectPatches", "SuperResolveGT", "TrainEnhancer", "TrainJudge", "TrainMaskGenerator",
    "TrainSR", "TrainVQVAE2", "VQVAEDegradeLR", "WriteManifest", "WriteShards", "gtforge",
]

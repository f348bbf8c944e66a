"""Resources: stages holding `gpu` never run at the same time, even with several workers."""

import time

import luigi
import luigi.configuration

from tasks import graph
from tasks.base import Stage
from tasks.publish import BuildDataset
from tests.test_scheduler import overlaps, read_runs, record


class GpuToy(Stage):
    n = luigi.IntParameter()
    resources = {"gpu": 1}

    def requires(self):
        return []

    def build(self, out):
        record("start", self)
        time.sleep(0.4)
        record("end", self)


class CpuToy(GpuToy):
    resources = {}


class ResourceRoot(luigi.WrapperTask):
    def requires(self):
        return [GpuToy(n=0), GpuToy(n=1), CpuToy(n=0), CpuToy(n=1)]


def test_gpu_tasks_never_overlap_under_two_workers(build_env):
    assert luigi.configuration.get_config().getint("resources", "gpu") == 1  # luigi.cfg
    result = luigi.build([ResourceRoot()], local_scheduler=True, workers=2,
                         detailed_summary=True)
    assert result.scheduling_succeeded, result.summary_text
    runs = read_runs()
    assert len(runs) == 8
    assert overlaps(runs, {"GpuToy", "CpuToy"})  # two workers did run tasks side by side ...
    assert overlaps(runs, {"GpuToy"}) == []  # ... but never the two holding the gpu


def test_training_stages_hold_the_gpu(build_env):
    """Resumable stages are the trainings: each stage of the build DAG that is one must hold
    `gpu` on a CUDA device, so that luigid never runs two at once, and `cpu` on the CPU."""
    build_env.set("gtforge", "candidates", "rcan_noise,elan_blur,fused")
    trainings = [s for s in graph.stages(BuildDataset()) if s.resumable]
    assert trainings
    for stage in trainings:
        assert stage.process_resources() == {"cpu": 1}, stage.get_task_family()
    build_env.set("gtforge", "device", "cuda")
    for stage in graph.stages(BuildDataset()):
        assert stage.process_resources() == ({"gpu": 1} if stage.heavy else {}), \
            f"{stage.get_task_family()} should hold the gpu resource"

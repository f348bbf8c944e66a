"""Shared fixtures: a small photo corpus and an isolated luigi configuration per test."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import luigi
import luigi.configuration
import pytest
from luigi.task_register import Register

import tasks  # noqa: F401  (loads the packaged luigi.cfg)
from pipeline.image.sample import copy_sample_corpus
from tasks.base import Stage
from tasks.corpus import forget_listings

SMALL_CORPUS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """All sample photographs, copied once per session."""
    copies = copy_sample_corpus(tmp_path_factory.mktemp("sample") / "all")
    return copies[0].parent


@pytest.fixture(scope="session")
def small_corpus(sample_corpus, tmp_path_factory) -> Path:
    """Four sample photographs (300x451 to 512x512): enough for tiny builds."""
    dest = tmp_path_factory.mktemp("small")
    for name in SMALL_CORPUS:
        shutil.copyfile(sample_corpus / name, dest / name)
    return dest


class Settings:
    """Set luigi.cfg values for one test; everything is restored afterwards."""

    def __init__(self) -> None:
        self._cfg = luigi.configuration.get_config()
        self._saved: list[tuple[str, str, str | None]] = []

    def set(self, section: str, key: str, value: object) -> None:
        old = self._cfg.get(section, key) if self._cfg.has_option(section, key) else None
        self._saved.append((section, key, old))
        if not self._cfg.has_section(section):
            self._cfg.add_section(section)
        self._cfg.set(section, key, str(value))
        Register.clear_instance_cache()
        forget_listings()

    def restore(self) -> None:
        for section, key, old in reversed(self._saved):
            if old is None:
                self._cfg.remove_option(section, key)
            else:
                self._cfg.set(section, key, old)
        Register.clear_instance_cache()
        forget_listings()


@pytest.fixture
def settings() -> Settings:
    s = Settings()
    yield s
    s.restore()


@pytest.fixture
def build_env(settings, small_corpus, tmp_path) -> Settings:
    """tiny preset, the small corpus as input, no candidates, a fresh workdir and out_dir, a
    small TrainJudge and few restoration items for the CFMG."""
    settings.set("gtforge", "preset", "tiny")
    settings.set("gtforge", "input_dir", small_corpus)
    settings.set("gtforge", "workdir", tmp_path / "work")
    settings.set("gtforge", "out_dir", tmp_path / "out")
    settings.set("gtforge", "device", "cpu")
    settings.set("gtforge", "candidates", "")
    for key, value in {"bases": 48, "iterations": 20, "batch_size": 8}.items():
        settings.set("tiny.TrainJudge", key, value)  # a judge in seconds
    settings.set("tiny.TrainMaskGenerator", "restoration_crops", 6)  # the CFMG's items in seconds
    return settings


def assert_setting_moves_key(env: Settings, make: Callable[[], Stage], section: str, name: str,
                             value: object) -> None:
    """Set [section] name = value and assert that the stage `make()` builds resolves `name` to a
    new value (a test value that has become the default would check nothing) and that its key
    moved."""
    before = make()
    old_value, old_key = before.settings[name], before.key
    env.set(section, name, value)
    after = make()
    assert after.settings[name] != old_value, \
        f"{section} {name} = {value} is already the setting: test another value"
    assert after.key != old_key, f"{section} {name} = {value} left the key as it was"


def run_tasks(*tasks_to_run: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    """Build with the local scheduler and fail the test if anything failed."""
    result = luigi.build(list(tasks_to_run), local_scheduler=True, detailed_summary=True)
    assert result.scheduling_succeeded, result.summary_text
    return result

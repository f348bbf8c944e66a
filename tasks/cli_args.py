"""The [gtforge] settings that the `gtforge` commands accept as flags."""

from __future__ import annotations

import argparse

LUIGID_SECTION = "luigid"  # luigi.cfg's section for `gtforge scheduler` and the build's port

# Passed to luigi as --gtforge-<name> by `gtforge build` and `evaluate`, set in the config by
# the cache commands.
BUILD_SETTINGS = ("preset", "input_dir", "workdir", "out_dir", "device", "threads", "precision",
                  "channels_last", "candidates", "references", "chunk_photos", "training_set",
                  "training_sample")


def add_build_settings(parser: argparse.ArgumentParser) -> None:
    """One --<setting> flag per BUILD_SETTINGS entry."""
    for name in BUILD_SETTINGS:
        parser.add_argument(f"--{name.replace('_', '-')}", help=f"[gtforge] {name}")

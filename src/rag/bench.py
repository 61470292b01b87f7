"""``rag bench``: speed and memory of every stage, measured in one run (placeholder, filled in by issue 6)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")


def run_cli(args: argparse.Namespace, settings) -> int:
    raise NotImplementedError("rag bench is not built yet")

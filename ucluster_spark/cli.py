"""Command-line plumbing shared by ``jobs/*.py``: arguments -> Config, and exit codes a scheduler can act on."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from ucluster_spark.config import Config, ConfigError, load

EXIT_OK = 0
EXIT_BAD_INPUT = 2
"""Bad configuration, arguments or input data: rerunning will not help until the input is fixed."""
EXIT_TRAINING_FAILED = 3
"""Training or a Spark/Horovod stage failed: may be transient, safe to rerun."""


def train_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config file (conf/*.yaml)")
    parser.add_argument("--data", help="prepared dataset directory (overrides data.path)")
    parser.add_argument("--output", help="run directory to write (overrides run.output)")
    parser.add_argument("--num-proc", type=int, help="Horovod ranks (overrides run.num_proc)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    if args.output is not None:
        overrides.append(f"run.output={args.output}")
    if args.num_proc is not None:
        overrides.append(f"run.num_proc={args.num_proc}")
    return load(args.config, overrides)


def run_main(body: Callable[[], int]) -> int:
    """Map failures to exit codes with one clear message (and the traceback for training failures)."""
    from ucluster_spark.data.dataset import DatasetError
    from ucluster_spark.launcher import LaunchError

    try:
        return body()
    except (ConfigError, DatasetError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LaunchError as err:
        traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_TRAINING_FAILED

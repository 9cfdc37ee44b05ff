"""Train UCluster with Horovod inside Spark.

spark-submit jobs/train.py --config FILE [--data DIR] [--output RUN_DIR] [--num-proc N] [section.key=value ...]
spark-submit jobs/train.py --resume RUN_DIR [--num-proc N] [section.key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from ucluster_spark import errors, store
from ucluster_spark.config import Config, ConfigError
from ucluster_spark.driver import cli


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (conf/*.yaml); required unless --resume")
    parser.add_argument("--data", help="prepared dataset directory (overrides data.path)")
    parser.add_argument("--output", help="run directory to write (overrides run.output)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an unfinished run from its last checkpoint, with the run's own config (plus overrides)",
    )
    parser.add_argument("--num-proc", type=int, help="Horovod ranks (overrides run.num_proc)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def training_config(
    config: str | None = None,
    *,
    resume: str | None = None,
    output: str | None = None,
    data: str | None = None,
    num_proc: int | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """The configuration of a new run (``config`` + ``output``) or of a run to continue (``resume``: the run's own
    config.yaml); shared by the job and the notebook."""
    flags = {"data.path": ("--data", data), "run.num_proc": ("--num-proc", num_proc)}
    if resume is not None:
        if config is not None or output is not None:
            raise ConfigError("--resume continues a run with its own config and directory: drop --config/--output")
        stored = store.RunLayout(resume).config
        if not stored.exists():
            raise errors.InputMissing(f"--resume {resume}: not a run directory (no {stored.name})")
        flags["run.output"] = ("--resume", resume)
        return cli.load_config(stored, overrides, flags)
    if config is None:
        raise ConfigError("--config is required (or --resume RUN_DIR)")
    flags["run.output"] = ("--output", output)
    return cli.load_config(config, overrides, flags)


def config_from_args(args: argparse.Namespace) -> Config:
    return training_config(
        args.config,
        resume=args.resume,
        output=args.output,
        data=args.data,
        num_proc=args.num_proc,
        overrides=list(args.overrides),
    )


def main(argv: list[str] | None = None) -> int:
    args = cli.parse_args(parser(), sys.argv[1:] if argv is None else argv)
    run_dirs: list[str] = []

    def body() -> int:
        from ucluster_spark.driver import tracking
        from ucluster_spark.driver.launcher import train
        from ucluster_spark.driver.session import get_session, stop

        cfg = config_from_args(args)
        cfg.run.output = cfg.run.output or str(store.default_run_dir())  # named now: an interrupt can point to it
        store.check_output_location(cfg.run.output, "--resume" if args.resume else "--output")  # before Spark
        run_dirs.append(cfg.run.output)
        spark = get_session("ucluster-train", cfg.run.spark_conf)
        try:
            result = train(spark, cfg, resume=args.resume is not None)
        finally:
            stop(spark)
        tracking.log_training(result.run_dir)
        m = result.metrics
        print(f"run directory: {result.run_dir}")
        degenerate = "; ".join(m.get("warnings") or [])
        print(
            f"clustering accuracy (test, {m['n_jets']} jets): {m['clustering_accuracy']:.4f} "
            f"(NMI {m['nmi']:.3f}, ARI {m['ari']:.3f})" + (f"; DEGENERATE: {degenerate}" if degenerate else "")
        )
        return errors.EXIT_OK

    return cli.run_main(body, lambda: interrupted_training(run_dirs[0]) if run_dirs else "")


def interrupted_training(run_dir: str) -> str:
    """What an interrupted training job leaves and how to continue it."""
    from ucluster_spark import checkpoint

    last = checkpoint.latest(run_dir) if store.local_path(run_dir).is_dir() else None
    if last is None:
        return f"training into {run_dir} stopped before its first checkpoint: run the same command again"
    return (
        f"training into {run_dir} stopped; its last checkpoint is {last.name}: continue with "
        f"spark-submit jobs/train.py --resume {run_dir}"
    )

"""The scaling benchmark's figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ucluster_spark import store
from ucluster_spark.plots import figure


def scaling_plot(report: dict[str, Any], path) -> Path:
    """The scaling benchmark: steady throughput per layout against perfect scaling, and where each run's wall
    time went."""
    summary = report["summary"]
    rates = summary["steady_jets_per_second"]
    names = sorted(rates, key=lambda n: (not n.startswith("bare"), n))
    with figure(path, 1, 2) as (fig, (left, right)):
        colours = ["grey" if n.startswith("bare") else "C2" if n.startswith("barrier") else "C0" for n in names]
        bars = left.bar(names, [rates[n] for n in names], color=colours)
        left.bar_label(bars, fmt="%.0f")
        per_rank = report["threads_per_rank"]
        ideals = []
        for name, run in report["runs"].items():
            if run["threads_per_rank"] == per_rank and run["num_proc"] > 1:
                one_rank = f"{name.split('_')[0]}_1x{per_rank}"  # the same launcher's 1-rank run
                ideal, at = run["num_proc"] * rates[one_rank], names.index(name)
                ideals.append(ideal)
                left.hlines(ideal, at - 0.4, at + 0.4, ls="--", color="C1", label="perfect scaling")
        left.set_ylabel("training jets / s (steady state)")
        efficiency = ", ".join(f"{n} ranks {e:.2f}" for n, e in summary["scaling_efficiency"].items())
        title = f"horovod: overhead vs bare {summary['overhead_vs_bare']:.1%}, efficiency {efficiency}"
        if "barrier" in summary:
            barrier = summary["barrier"]
            efficiency = ", ".join(f"{n} ranks {e:.2f}" for n, e in barrier["scaling_efficiency"].items())
            title += f"\nbarrier: overhead vs bare {barrier['overhead_vs_bare']:.1%}, efficiency {efficiency}"
        left.set_title(title, fontsize=9)
        left.tick_params(axis="x", labelsize=8)
        left.set_ylim(top=1.25 * max([*rates.values(), *ideals]))
        handles, labels = left.get_legend_handles_labels()
        if handles:
            left.legend(handles[:1], labels[:1], loc="upper right", fontsize=8)

        runs = report["runs"]
        parts = [
            ("launch -> ranks ready", lambda r: r["launch_seconds"]),
            ("rank set-up", lambda r: r["rank_setup_seconds"]),
            ("epochs (training)", lambda r: sum(e["seconds"] for e in r["epochs"])),
            ("between epochs (validation, checkpoint)", lambda r: r["between_epochs_seconds"]),
            ("test evaluation, outputs, shutdown", lambda r: r["finish_seconds"]),
        ]
        stack_names = list(runs)
        left_edge = [0.0] * len(stack_names)
        for label, part in parts:
            widths = [part(runs[n]) for n in stack_names]
            right.barh(stack_names, widths, left=left_edge, label=label)
            left_edge = [a + b for a, b in zip(left_edge, widths, strict=True)]
        spark_seconds = summary["startup_seconds"]["spark_session"]
        right.set_xlabel(f"seconds (plus {spark_seconds:.1f} s Spark session start, once)")
        right.set_title("where the wall time of each run goes")
        right.legend(fontsize=8, loc="lower right")
    return store.local_path(path)

"""Driver side: Spark accumulators the jobs share (executors add to them, the driver reads the total)."""

from __future__ import annotations

from collections import Counter

from pyspark.accumulators import AccumulatorParam


class CounterParam(AccumulatorParam):
    """Accumulates ``Counter``s: executors report why they dropped jets, or which process ran a task."""

    def zero(self, value):
        return Counter()

    def addInPlace(self, a, b):
        a.update(b)
        return a


def counter_accumulator(spark):
    """A ``Counter`` accumulator of this session: tasks ``add(Counter(...))``, the driver reads ``.value``."""
    return spark.sparkContext.accumulator(Counter(), CounterParam())

"""Process set-up inside a rank: each rank's share of the cores, and binding every thread of the process to it."""

import os
import subprocess
import sys
import textwrap

import pytest

from ucluster_spark.executor.rank.environment import core_share


@pytest.mark.parametrize(
    "allowed, local_size, shares",
    [
        ({0, 1}, 2, [[0], [1]]),
        ({0, 1, 2, 3}, 2, [[0, 1], [2, 3]]),
        ({7, 3, 5}, 1, [[3, 5, 7]]),
        ({4, 5, 6, 7, 8}, 2, [[4, 5], [6, 7]]),  # equal shares; the odd core is left to the helpers
        ({0, 1}, 3, [[], [], []]),  # more ranks than cores: nothing to bind to
    ],
)
def test_ranks_on_a_host_get_disjoint_equal_shares_of_its_cores(allowed, local_size, shares):
    assert [core_share(allowed, rank, local_size) for rank in range(local_size)] == shares


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux thread affinity")
def test_binding_covers_threads_already_running_and_threads_started_later():
    script = textwrap.dedent(
        """
        import os, threading
        from ucluster_spark.executor.rank.environment import bind_threads

        first = min(os.sched_getaffinity(0))
        stop = threading.Event()
        early = threading.Thread(target=stop.wait)
        early.start()
        bound = bind_threads([first])
        late = threading.Thread(target=stop.wait)
        late.start()
        masks = {tid: os.sched_getaffinity(int(tid)) for tid in os.listdir("/proc/self/task")}
        stop.set()
        print(bound, len(masks), all(mask == {first} for mask in masks.values()))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    bound, threads, all_bound = int(out[0]), int(out[1]), out[2]
    assert bound >= 2 and threads == bound + 1  # the main thread and the early one, then the late one
    assert all_bound == "True"

"""Each launcher's collectives as a rank builds them (registry.LAUNCHERS), gathering a different number of rows on
each rank (the k-means start's sample, the shard sizes), in two real processes of each library: Horovod over Gloo
(``horovodrun``) and ``tf.distribute`` (``TF_CONFIG``)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, needs_horovod

pytestmark = pytest.mark.slow

RANK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from ucluster_spark import config
    from ucluster_spark.registry import LAUNCHERS, part

    launcher, out = sys.argv[1], sys.argv[2]
    cfg = config.load(None, [f"run.launcher={launcher}"])
    comm = part(LAUNCHERS, launcher, "executor").connect(cfg, lambda _: None)
    rows = np.full((2 * comm.rank + 1, 3), comm.rank, np.float32)  # rank 0: 1 row, rank 1: 3 rows
    ids = np.arange(3 * comm.rank, dtype=np.int64)  # rank 0: none at all
    result = {"rows": comm.gather(rows, "rows").tolist(), "ids": comm.gather(ids, "ids").tolist()}
    with open(f"{out}-{comm.rank}.json", "w") as handle:
        json.dump(result, handle)
    """
)
EXPECTED = {"rows": [[0.0] * 3] + [[1.0] * 3] * 3, "ids": [0, 1, 2]}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _results(out) -> list[dict]:
    return [json.loads((out.parent / f"{out.name}-{rank}.json").read_text()) for rank in range(2)]


@needs_horovod
def test_horovod_gathers_every_ranks_rows_in_rank_order_whatever_their_number(tmp_path):
    script, out = tmp_path / "rank.py", tmp_path / "gathered"
    script.write_text(RANK)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    done = subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(script),
                           "horovod", str(out)], env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert _results(out) == [EXPECTED, EXPECTED]


@pytest.mark.portable
def test_tf_distribute_gathers_every_ranks_rows_in_rank_order_whatever_their_number(tmp_path):
    script, out = tmp_path / "rank.py", tmp_path / "gathered"
    script.write_text(RANK)
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    workers = [f"127.0.0.1:{port}" for port in ports]
    ranks = [
        subprocess.Popen([sys.executable, str(script), "barrier", str(out)], stderr=subprocess.PIPE, text=True,
                         env={**_env(), "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                                                 "task": {"type": "worker", "index": rank}})})
        for rank in range(2)
    ]  # fmt: skip
    for rank in ranks:
        _, stderr = rank.communicate(timeout=300)
        assert rank.returncode == 0, stderr[-3000:]
    gathered = _results(out)
    assert gathered == [EXPECTED, EXPECTED]
    assert np.asarray(gathered[0]["ids"]).dtype.kind == "i"

"""How an epoch is cut into steps across ranks: same step count everywhere, every jet once, exact mean gradient."""

import pytest

from ucluster_spark.plan import EpochPlan

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment


@pytest.mark.parametrize(
    "sizes, batch",
    [([10492, 10490], 128), ([1000], 128), ([640, 512, 700], 64), ([33, 31], 16), ([5, 5], 1)],
)
def test_every_rank_takes_the_same_steps_and_every_jet_is_in_one(sizes, batch):
    plan = EpochPlan.for_shards(sizes, batch)
    for rank, size in enumerate(sizes):
        batches = plan.batch_sizes(rank)
        assert len(batches) == plan.steps
        assert sum(batches) == size
        assert max(batches) <= batch and min(batches) >= 1
        assert max(batches) - min(batches) <= 1
    assert plan.jets == sum(sizes)


def test_gradient_weights_make_the_rank_average_a_mean_over_every_jet_of_the_step():
    plan = EpochPlan.for_shards([700, 512], 64)  # 11 steps: batches of 63-64 and 46-47 jets
    w0, w1 = plan.gradient_weights(0), plan.gradient_weights(1)
    for step, (n0, n1) in enumerate(zip(plan.batch_sizes(0), plan.batch_sizes(1), strict=True)):
        # Horovod averages weight_r * (mean gradient of rank r) over the 2 ranks: the mean over n0 + n1 jets.
        assert w0[step] / 2 == pytest.approx(n0 / (n0 + n1))
        assert w1[step] / 2 == pytest.approx(n1 / (n0 + n1))
    equal = EpochPlan.for_shards([256, 256], 128)
    assert equal.gradient_weights(0) == equal.gradient_weights(1) == [1.0, 1.0]


def test_shards_too_uneven_to_share_a_step_count_are_refused():
    with pytest.raises(ValueError, match=r"training shards of \[100, 3\] jets are too uneven for batches of 16"):
        EpochPlan.for_shards([100, 3], 16)


def test_a_step_limit_cuts_the_epoch_to_the_first_steps_of_a_pass():
    whole = EpochPlan.for_shards([700, 512], 64)
    cut = EpochPlan.for_shards([700, 512], 64, max_steps=4)
    assert (cut.steps, cut.pass_steps, whole.steps) == (4, 11, 11) and not cut.whole_pass
    for rank in (0, 1):
        assert cut.batch_sizes(rank) == whole.batch_sizes(rank)[:4]
        assert cut.gradient_weights(rank) == whole.gradient_weights(rank)[:4]
    assert cut.jets == sum(whole.batch_sizes(0)[:4]) + sum(whole.batch_sizes(1)[:4])
    assert EpochPlan.for_shards([700, 512], 64, max_steps=50) == whole  # a limit above one pass changes nothing
    assert whole.whole_pass

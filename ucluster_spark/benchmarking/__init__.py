"""Code the benchmarks and the tests use, and no job: baselines and probes for the accuracy benchmark, replicated
datasets for the scale benchmark, small files in the hls4ml layout with made-up values, the scaling plot."""

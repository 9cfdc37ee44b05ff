"""Small input files in the public layouts this project ingests (hls4ml HDF5, JetClass ROOT, top-tagging pandas
HDF5) with made-up values: for the tests, the data-throughput benchmark and trying ``prepare`` without a download."""

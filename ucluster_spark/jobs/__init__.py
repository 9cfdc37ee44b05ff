"""Driver side: the entry point of every job, ``main(argv) -> exit code``.

``jobs/<name>.py`` (for ``spark-submit``) and the console scripts ``ucluster-<name>`` (setup.cfg) call these.
"""

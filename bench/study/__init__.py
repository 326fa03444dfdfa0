"""The pieces of bench/reproduce.py's studies, one idea per module.

- ``runs``: the schedules' candidates, their honest tuning on validation
  seeds, and running jobs side by side in worker processes;
- ``paired``: paired statistics of one schedule against another, seed by seed;
- ``oracle_interval``: the Oracle's validation accuracy over its grid and the
  interval of peaks within one standard error of the best;
- ``extreme`` and ``extreme_report``: the digits-extreme setting and its report.

bench's scripts import their siblings by name (``bench/`` is the script's own
folder on ``sys.path``), so these are imported as ``study.<module>``.
"""

"""The paper's claims measured at CPU scale with error bars (issue 7); its command is ``spatialboost replicate``
(``spatialboost.cli.replicate``).

- ``study.py``: the study as data -- sizes, the untuned recipe, data variants, the ``ARMS`` registry, tables.
- ``data.py``: the main stage-3 dataset and its variants, written with the data engine.
- ``dense.py``: the dense-head supervision trainer (Table 6 baselines).
- ``simple_ft.py``: the base's own 2D objective continued (Table 8).
- ``probing.py``: frozen-feature probes of one encoder (``spatialboost.eval``).
- ``diagnostics.py``: gates, Attn+ movement, loss curves, answer-token accuracy, spatial content of the data.
- ``runner.py``: ``run_study`` -- pre-train once, stages 1+2 per seed, every arm, resumable.
- ``report.py``: results.json / results.md / plots from the arms' result files.
"""

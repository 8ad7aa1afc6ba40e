"""Studies: experiments built on the library, kept apart from it (the library never imports them).

- ``demo``: the whole pipeline on the embedded synthetic default, at demo size, boosting DINOv2-S
  (``spatialboost demo``); ``demo_figures``: its pictures and results page.
- ``replicate/``: the paper's ablations at CPU scale with error bars (``spatialboost replicate``).

Their commands live in ``spatialboost.cli`` (``cli.demo``, ``cli.replicate``); a study is plain functions of its
config that a benchmark script or a test can call directly.
"""

"""What each probe is, declared once: its task, its config, its metrics and their direction, its headline
metrics, the targets it needs and whether it trains on a train split.

``SPECS`` lists every probe in report order (the 2D probes of ``eval.probes``, the 3D probes of
``eval.probes3d``, the robot probe of ``eval.robot``); the functions stay in their modules' registries
(``PROBES``, ``PROBES_3D``), keyed by the same names (``tests/test_eval_probes.py`` checks both agree). The
runner (task -> probes, the rows' ``lower_is_better``), the report (headlines, table order) and the replicate
study read them from here. A metric whose name carries a threshold (``recall@0.1m``, ``rr@0.2m``) is listed at
the defaults; the model card, which cannot import ``eval``, reads a row's ``lower_is_better`` and otherwise
``spatialboost.noise.LOWER_IS_BETTER``, which the test keeps equal to the directions here.

``TASKS`` (what ``--task`` and a config's ``tasks`` name) is derived from the specs, on each use: each spec's
task runs its probes on its bench, ``all`` the 2D probes (those the dataset has targets for) and ``all3d`` the 3D
ones; a job (``eval.job.run_job``) builds one bench per kind from it (``eval.benches.build_benches``).

A new 2D probe is three edits: its function and config class in ``eval/probes.py`` (``@register_probe(name,
Config)``), its ``ProbeSpec`` here, and its test. Everything else follows from those two: its section of a probe
job's config (``ProbeConfigs``: field ``ProbeSpec.config_field``, ``cls-linear`` -> ``probes.cls_linear``), its
task (a new task name included), its place in ``all``, its rows' direction and the report's headline
(``tests/test_eval_new_probe.py`` runs a toy probe through a job and its report with nothing else added). Its
``targets`` name arrays a ``FeatureSet`` already carries (``eval.features.TARGET_OF_TASK`` maps a dataset's own
task names to them; only a new kind of target needs more: the datasets and the feature cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from spatialboost.errors import UnknownNameError
from spatialboost.noise import lower_is_better as default_lower_is_better
from spatialboost.registry import Registry


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    task: str  # the --task that selects it ("all" adds every 2D task the dataset has targets for)
    bench: str  # "2d" (eval.bench2d on cached features), "3d" or "robot" (eval.benches)
    metrics: tuple[str, ...]  # what it reports; for 2D probes also their order in the tables
    headline: tuple[str, ...]  # the metrics bars.png and headline tables show
    lower_is_better: frozenset[str] = frozenset()  # those of ``metrics`` where lower is better
    targets: tuple[str, ...] = ()  # the dataset targets it trains and scores on ("depth", "seg", "label")
    needs_train: bool = True  # fits (or stores) something on a train split

    def is_lower_better(self, metric: str) -> bool:
        return metric in self.lower_is_better

    @property
    def config_field(self) -> str:
        """Its section of a probe job's config, ``probes.<config_field>`` (``eval.probes.ProbeConfigs``; 2D
        probes): the name with ``-`` as ``_`` (``cls-linear`` -> ``cls_linear``)."""
        return self.name.replace("-", "_")


_DEPTH = ("rmse", "absrel", "log10", "log10_rmse", "delta1", "delta2", "delta3")
_DEPTH_ERRORS = frozenset({"rmse", "absrel", "log10", "log10_rmse"})

SPECS: dict[str, ProbeSpec] = {
    s.name: s
    for s in (
        ProbeSpec("depth", "depth", "2d", _DEPTH, ("rmse", "absrel", "delta1"), _DEPTH_ERRORS, ("depth",)),
        ProbeSpec("seg", "seg", "2d", ("miou", "pixel_acc"), ("miou", "pixel_acc"), targets=("seg",)),
        ProbeSpec("cls-linear", "cls", "2d", ("top1",), ("top1",), targets=("label",)),
        ProbeSpec("cls-knn", "cls", "2d", ("top1",), ("top1",), targets=("label",)),
        ProbeSpec("corr", "corr", "3d", ("recall@0.1m", "recall@0.2m", "recall@0.4m"),
                  ("recall@0.1m", "recall@0.2m", "recall@0.4m"), targets=("depth",), needs_train=False),
        ProbeSpec("register", "register", "3d", ("rr@0.2m", "rte", "rre", "rmse_median"), ("rr@0.2m", "rte", "rre"),
                  frozenset({"rte", "rre", "rmse_median"}), targets=("depth",), needs_train=False),
        ProbeSpec("sem3d", "sem3d", "3d", ("acc", "miou"), ("acc", "miou"), targets=("depth", "seg")),
        ProbeSpec("robot", "robot", "robot", ("success",), ("success",)),
    )
}  # fmt: skip
GROUPS = {"2d": "all", "3d": "all3d"}  # the task that runs every probe of a bench


@dataclass(frozen=True)
class Task:
    bench: str  # the bench that runs it: a ``ProbeSpec.bench``
    probes: tuple[str, ...]  # its probes (``all``: those the dataset has targets for)


def task_table() -> dict[str, Task]:
    """Every spec's task, then its bench's group task, bench by bench in report order (a task name twice
    raises)."""
    tasks: Registry[Task] = Registry("probe task")
    for bench in dict.fromkeys(s.bench for s in SPECS.values()):
        specs = [s for s in SPECS.values() if s.bench == bench]
        for task in dict.fromkeys(s.task for s in specs):
            tasks.add(task, Task(bench, tuple(s.name for s in specs if s.task == task)))
        if bench in GROUPS:
            tasks.add(GROUPS[bench], Task(bench, tuple(s.name for s in specs)))
    return dict(tasks.items())


class SpecTasks(Registry[Task]):
    """``TASKS``: a registry of ``task_table()``, read from ``SPECS`` on each use, so a spec added later (a test's
    toy probe) brings its task along; a task is added by adding a spec, never by ``add``."""

    def __init__(self) -> None:  # no item store of its own: ``_items`` is derived
        self.kind = "probe task"

    @property
    def _items(self) -> dict[str, Task]:  # type: ignore[override]
        return task_table()

    def add(self, name: str, obj: Task) -> None:
        raise TypeError(f"probe tasks come from eval.specs.SPECS: add a ProbeSpec for {name!r}")


TASKS = SpecTasks()


def metric_order() -> list[str]:
    """The 2D probes' metrics in table order, read from ``SPECS`` on each call (a spec added later counts)."""
    return list(dict.fromkeys(m for s in SPECS.values() if s.bench == "2d" for m in s.metrics))


def probe_spec(name: str) -> ProbeSpec:
    if name not in SPECS:
        raise UnknownNameError(f"unknown probe {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


def headline(probe: str) -> tuple[str, ...]:
    """The probe's headline metrics; none for a probe without a spec (a robot task's own row)."""
    return SPECS[probe].headline if probe in SPECS else ()


def metric_lower_is_better(probe: str, metric: str) -> bool:
    """The direction of ``probe``'s ``metric``: its spec's when it declares the metric, else the shared set."""
    spec = SPECS.get(probe)
    if spec is not None and metric in spec.metrics:
        return spec.is_lower_better(metric)
    return default_lower_is_better(metric)

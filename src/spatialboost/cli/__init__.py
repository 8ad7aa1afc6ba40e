"""The ``spatialboost`` command line: parse, load config, call one library function.

One module per command (``COMMANDS`` below), each exposing ``add_arguments(parser) -> None`` and
``run(args) -> int``; ``common`` holds what they share, ``load_command_config`` above all: every command builds
its config the same way (YAML file -> dataclass defaults -> flags -> ``key.sub=value`` overrides -> validation).
Command modules are imported lazily, so ``spatialboost --help`` stays fast. Usage errors exit with code 2
(argparse's convention); the ``UserError`` family (``spatialboost.errors``: config and unknown-name errors
included) is caught here, in one place, and prints one line and exits 2 too. The library (``datagen``, ``data``,
``models``, ``train``, ``eval``) and the studies never import this package.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# OpenMP threads that spin-wait stall every op when another process holds a core (measured here: a
# demo stage-3 step took 4.1 s at 2 threads with the default policy, 0.28 s with PASSIVE). Must be set
# before torch loads libgomp; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from spatialboost.errors import UserError

DESCRIPTION = """\
SpatialBoost makes a pre-trained vision encoder aware of 3D space by teaching it through language:
generate spatial question-answer data from synthetic scenes or photos, train the encoder's dual-channel
adapter through a small language model, export the boosted encoder and measure it with frozen-feature
probes. `spatialboost demo` runs the whole loop on CPU; `spatialboost COMMAND --help` explains a command."""

# name -> (module implementing add_arguments/run, one-line help); tests/test_import_layers.py reads the
# module names as imports of this package
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("spatialboost.cli.generate", "generate a spatial CoT dataset (synthetic or images)"),
    "validate": ("spatialboost.cli.validate", "check a dataset's schema, files and answers"),
    "view": ("spatialboost.cli.view", "write a static HTML viewer of a dataset"),
    "train": ("spatialboost.cli.train", "run SpatialBoost training stages"),
    "export": ("spatialboost.cli.export", "export the boosted encoder of a run"),
    "probe": ("spatialboost.cli.probe", "frozen-feature probes of an encoder (and a baseline)"),
    "demo": ("spatialboost.cli.demo", "the whole pipeline on the embedded synthetic default"),
    "replicate": ("spatialboost.cli.replicate", "the paper's ablations at CPU scale"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, off switches, empty lists)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse that prints a one-line error (plus usage hint), exits 2, and shows defaults in --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_verbose(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")


def _verbose_after_command(parser: argparse.ArgumentParser) -> None:
    """``-v`` on a command's parser and on its own sub-commands (``generate synthetic -v``); SUPPRESS keeps a
    ``-v`` given before the command."""
    _add_verbose(parser, argparse.SUPPRESS)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _verbose_after_command(child)


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = _Parser(prog="spatialboost", description=DESCRIPTION)
    _add_verbose(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (mod_name, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        if name == chosen:
            module = importlib.import_module(mod_name)
            module.add_arguments(p)
        _verbose_after_command(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if module is None:
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"spatialboost {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

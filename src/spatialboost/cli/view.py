"""``spatialboost view DIR --out report.html``: a static HTML viewer of a dataset."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialboost.datagen.dataset.viewer import write_report
from spatialboost.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset directory")
    parser.add_argument("--out", type=Path, default=None, help="HTML file (default DIR/report.html)")
    parser.add_argument("--max-samples", type=int, default=16, help="samples on the page")
    parser.add_argument("--start", type=int, default=0, help="first sample shown (0-based; pages through)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file that is not a viewer page"
    )


def _is_viewer_page(path: Path) -> bool:
    """An earlier output of this command (so it may be replaced): an HTML file with the viewer's title."""
    try:
        with open(path, "rb") as f:
            head = f.read(400)
    except OSError:
        return False
    return path.is_file() and b"<title>SpatialBoost dataset " in head


def run(args: argparse.Namespace) -> int:
    out = args.out or args.dataset / "report.html"
    if out.is_dir():
        raise UserError(
            f"--out {out}: is a directory; give the HTML file to write, e.g. {out / 'report.html'}"
        )
    if out.exists() and not args.overwrite and not _is_viewer_page(out):
        raise UserError(f"{out}: exists and is not a page `spatialboost view` wrote; choose another --out or "
                        "pass --overwrite")  # fmt: skip
    n = write_report(args.dataset, out, args.max_samples, args.start)
    log.info("wrote %s (%d samples)", out, n)
    return 0

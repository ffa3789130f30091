"""comparison.html: one table variant x measure (the best marked, differences beyond noise
marked), the three comparison plots and a link to each variant's own report. Self-contained
(figures as data URIs, no script); every data string escaped by Jinja2's autoescaping."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from stethoscope.schemas.atomic import atomic_path
from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.variants.config import VariantSummary


def render(variants: list[VariantSummary], figures: list[tuple[str, Path, str]], out: Path,
           method: str, seeds: int) -> Path:
    env = Environment(loader=PackageLoader("stethoscope.tasks.variants", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals["fmt"] = _fmt
    measures = list(dict.fromkeys(m.measure for v in variants for m in v.measures))
    table = {v.name: {m.measure: m for m in v.measures} for v in variants}
    links = {v.name: [os.path.relpath(RunPaths(d).report, Path(out).parent) for d in v.run_dirs]
             for v in variants}
    html = env.get_template("comparison.html.j2").render(
        variants=variants, measures=measures, table=table, links=links, method=method,
        seeds=seeds, figures=[(title, _uri(path), caption) for title, path, caption in figures])
    with atomic_path(Path(out)) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(out)


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"

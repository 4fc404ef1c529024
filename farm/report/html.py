"""report.html: one self-contained page for reviewers, rendered from run.json (and the logs it names)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2

from ..results.run import FAILING, Run
from ..vm.console import CRASH_PATTERNS

MAX_SHOWN = 64 << 10  # bytes of each console/output shown inline; the file has it all


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("farm.report", "templates"),
        autoescape=True,  # every string from a guest or a log is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["anchor"] = lambda s: "cell-" + re.sub(r"[^A-Za-z0-9_-]", "_", s)
    env.filters["shjoin"] = shlex.join
    return env


def _tail(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - MAX_SHOWN))
            text = f.read().decode("utf-8", "replace")
        return ("[... earlier output in the file ...]\n" if size > MAX_SHOWN else "") + text
    except OSError:
        return None


def verdict(run: Run) -> tuple[str, str]:
    counts = run.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if any(counts[s] for s in FAILING):
        return "FAIL", summary
    if counts["PENDING"]:
        return "INCOMPLETE", summary
    if counts["ERROR"]:
        return "ERROR", summary
    return "PASS", summary


def render(run: Run, run_dir: Path) -> str:
    consoles, outputs = {}, {}
    for c in run.cells:
        if "console" in c.files:
            text = _tail(run_dir / c.files["console"])
            if text is not None:
                consoles[c.id] = [
                    {"text": line, "crash": any(p.search(line) for _, p in CRASH_PATTERNS)}
                    for line in text.splitlines()
                ]
        if "output" in c.files:
            text = _tail(run_dir / c.files["output"])
            if text is not None:
                outputs[c.id] = text
    delivered = {}
    for c in run.cells:  # per model: the probe's facts where a cell has them, features QEMU dropped from any
        d = delivered.setdefault(c.cpu, {"cpu_qemu": c.cpu_qemu, "accel": c.accel, "facts": {},
                                         "filtered_features": []})
        if c.facts.get("xcr0") and not d["facts"]:
            d["facts"] = c.facts
        d["filtered_features"] += [f for f in c.filtered_features if f not in d["filtered_features"]]
    name, summary = verdict(run)
    ordered = sorted(run.cells, key=lambda c: (c.status not in FAILING, c.status != "ERROR", c.id))
    return _env().get_template("report.html.j2").render(
        run=run,
        run_dir=str(run_dir),
        verdict=name,
        summary=summary,
        missing=run.missing(),
        kernels=list(dict.fromkeys(c.kernel for c in run.cells)),
        cpus=list(dict.fromkeys(c.cpu for c in run.cells)),
        tests=list(dict.fromkeys(c.test for c in run.cells)),
        grid={(c.kernel, c.cpu, c.test): c for c in run.cells},
        delivered=delivered,
        cells=ordered,
        consoles=consoles,
        outputs=outputs,
    )


def write(run: Run, run_dir: Path) -> Path:
    out = run_dir / "report.html"
    tmp = out.with_name(".report.html.tmp")
    tmp.write_text(render(run, run_dir))
    tmp.replace(out)
    return out

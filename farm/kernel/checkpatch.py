"""scripts/checkpatch.pl --strict on every patch of a kernel's series, from the kernel's own tree.

The result goes into the kernel's build record and every report; a patch that fails the check is
reported, never hidden, but does not stop the build or the tests (reviewers want both answers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from ..catalog import Kernel
from . import cache
from . import patches as kpatches
from . import source as ksource
from .cache import digest_json
from .run import Runner

_PROBLEM = re.compile(r"(ERROR|WARNING|CHECK)|\S+:\d+: (ERROR|WARNING|CHECK):")
_TOTAL = re.compile(r"total: (\d+) errors?, (\d+) warnings?, (?:(\d+) checks?, )?(\d+) lines? checked")


def parse_total(output: str) -> dict:
    m = _TOTAL.search(output)
    if not m:
        return {"errors": None, "warnings": None, "checks": None}
    return {"errors": int(m.group(1)), "warnings": int(m.group(2)), "checks": int(m.group(3) or 0)}


def check_series(kernel: Kernel, timeout: float = 300) -> list[dict]:
    """One entry per patch: its name, the counts, ok, and the report's problem lines. Cached per patch
    content, so after an edit to one patch of a series only that patch is checked again (the edit loop)."""
    if not kernel.patches or not kernel.source:
        return []
    res = ksource.resolve(kernel.source)
    results, todo = [], []
    for patch in kpatches.expand(kernel.patches):
        cached = cache.root() / "checkpatch" / f"{digest_json(['checkpatch-v2', res.digest, patch.sha256])}.json"
        results.append((patch, cached, json.loads(cached.read_text()) if cached.is_file() else None))
        if results[-1][2] is None:
            todo.append(patch)
    fresh = dict(zip([p.path for p in todo], _run(res, todo, timeout), strict=True)) if todo else {}
    out = []
    for patch, cached, result in results:
        if result is None:
            result = fresh[patch.path]
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(cached)
        out.append({**result, "patch": Path(patch.path).name})
    return out


def _run(res, series, timeout: float) -> list[dict]:
    tree = ksource.pristine_tree(res, Runner(), lambda text: None)
    script = tree / "scripts" / "checkpatch.pl"
    results = []
    for patch in series:
        path = Path(patch.path).resolve()  # checkpatch runs from the tree
        try:
            proc = subprocess.run(["perl", str(script), "--strict", "--no-color", "--showfile", str(path)],
                                  cwd=tree, capture_output=True, text=True, timeout=timeout)
            output = proc.stdout + proc.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            output, proc = f"checkpatch could not run: {e}", None
        counts = parse_total(output)
        problems = [ln for ln in output.splitlines() if _PROBLEM.match(ln)][:50]
        ok = proc is not None and proc.returncode == 0 and counts["errors"] == 0 and counts["warnings"] == 0 \
            and counts["checks"] == 0
        results.append({"patch": path.name, "ok": ok, **counts, "problems": problems})
    return results


def summary(results: list[dict]) -> str:
    if not results:
        return ""
    bad = [r for r in results if not r["ok"]]
    if not bad:
        return f"checkpatch --strict: all {len(results)} patch(es) clean"
    return (f"checkpatch --strict: {len(bad)} of {len(results)} patch(es) with problems: "
            + "; ".join(f"{r['patch']} ({r['errors']}E/{r['warnings']}W/{r['checks']}C)" for r in bad))

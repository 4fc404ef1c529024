"""kcidb.json: the run in KernelCI's KCIDB I/O schema (v5.3, as kcidb-io validates it).

  checkouts  one per kernel of the run: its source, the patch series (patchset_hash), the baseline
  builds     one per kernel: compiler, config, the commands that reproduce it, PASS/FAIL/ERROR
  tests      one per cell (path = the test) and one per KTAP case (path = "<test>.<case>"); the
             environment is the CPU model, with -cpu string, accelerator and probe facts in misc

Origin "farm"; every id is "farm:<run-id>:..." so runs never collide. Farm statuses map to KCIDB's:
PASS PASS, FAIL FAIL, SKIP SKIP, CRASH FAIL (the kernel is at fault), TIMEOUT ERROR, FLAKY FAIL (it
failed once: the farm counts it as failing), ERROR MISS (infrastructure), not run MISS; the farm's own
status is kept in misc.farm_status.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from ..results.run import BuildOutcome, BuildRecord, Run
from .common import atomic_write, build_commands, quiet_gc

ORIGIN = "farm"
VERSION = {"major": 5, "minor": 3}
EXCERPT = 16384  # the schema's limit for log_excerpt
_PATH_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@lru_cache(maxsize=1 << 16)
def path_part(name: str, fallback: str) -> str:
    """One element of a KCIDB test path: letters, digits, '_' and '-' only."""
    return _PATH_BAD.sub("_", name).strip("_") or fallback


def _s(text) -> str:
    return str(text).replace("\0", "\\x00")


def _time(value) -> str | None:
    """An RFC 3339 date-time (the schema checks the format), or None."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return t.isoformat()


def dumps(data: dict) -> str:
    """Compact JSON (the C encoder: fast for big runs), ASCII only, with every NUL shown as \\x00."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), default=str)
    parts, start = [], 0
    i = text.find("\\u0000")
    while i >= 0:
        j = i
        while j > 0 and text[j - 1] == "\\":
            j -= 1
        if (i - j) % 2 == 0:  # an escape of its own, not the text "\\u0000" after an escaped backslash
            parts += [text[start:i], "\\\\x00"]
            start = i + 6
        i = text.find("\\u0000", i + 6)
    return "".join(parts) + text[start:] if parts else text


def patchset_hash(patches: list[dict]) -> str:
    """sha256 over the newline-terminated sha256 of each patch, in order ('' without patches)."""
    hashes = [str(p.get("sha256", "")) for p in patches]
    if not hashes or not all(_SHA256.match(h) for h in hashes):
        return ""
    return hashlib.sha256("".join(h + "\n" for h in hashes).encode()).hexdigest()


def _build_status(build: BuildRecord | None) -> str | None:
    """KCIDB build status: PASS when the kernel was obtained, FAIL when it does not build (the series'
    fault), ERROR when the build could not be done."""
    if build is None:
        return None
    if build.outcome.ok:
        return "PASS"
    return "FAIL" if build.outcome is BuildOutcome.FAILED else "ERROR"


def _test(build_id: str, status, ident: str, path: str, excerpt: str, misc: dict, env: dict,
          log_url: str | None, duration: float | None) -> dict:
    t = {"id": ident, "origin": ORIGIN, "build_id": build_id, "path": path, "environment": env, "misc": misc,
         "status": status.kcidb}
    if excerpt:
        t["log_excerpt"] = _s(excerpt)[-EXCERPT:]
    if log_url:
        t["log_url"] = log_url
    if duration is not None:
        t["duration"] = float(duration)
    return t


def render(run: Run, base_url: str | None = None) -> dict:
    """The KCIDB document. base_url: where the run directory is published (for log_url), if anywhere."""
    started = _time(run.started)
    builds = run.builds()
    kernels = list(dict.fromkeys([*(c.kernel for c in run.cells), *run.kernels]))
    checkouts, builds_out, tests = [], [], []
    for k in kernels:
        info = run.kernels.get(k)
        build = builds.get(k)
        meta = build.metadata if build else {}
        co = {"id": f"{ORIGIN}:{run.run_id}:{k}", "origin": ORIGIN, "tree_name": _s((info.source if info else "") or k),
              "patchset_hash": patchset_hash(build.patches if build else []),
              "comment": _s((info.description if info else "") or k),
              "misc": {"kernel": k, "baseline": info.baseline if info else None,
                       "source": info.source if info else None, "patches": info.patches if info else [],
                       "digest": build.source_digest if build else None,
                       "kernel_version": (build.version if build else None) or None}}
        if build and _SHA1.match(build.source_commit):
            co["git_commit_hash"] = build.source_commit
        if run.series is not None and info and info.baseline and k != info.baseline and k.endswith("+series"):
            s = run.series  # this checkout is the series under test: KCIDB's message_id is its cover letter
            if s.message_id:
                co["message_id"] = _s(s.message_id)
            co["misc"]["series"] = {"subject": _s(s.subject), "version": s.version, "link": _s(s.link),
                                    "base_commit": s.base_commit, "base_used": _s(s.base_used)}
        if started:
            co["start_time"] = started
        status = _build_status(build)
        if status == "PASS":
            co["valid"] = True  # the source was obtained and the series applied: it built
        checkouts.append(co)
        b = {"id": f"{ORIGIN}:{run.run_id}:{k}:build", "origin": ORIGIN, "checkout_id": co["id"],
             "architecture": "x86_64",
             "misc": {k2: v for k2, v in (("key", build.key if build else ""),
                                          ("cache_hit", build.cache_hit if build and not build.prebuilt else None),
                                          ("kernel_release", build.release if build else ""),
                                          ("image_sha256", meta.get("image_sha256")),
                                          ("image_size", meta.get("image_size")),
                                          ("incremental", meta.get("incremental"))) if v not in (None, "")}}
        if status:
            b["status"] = status
        if build and build.compiler:
            b["compiler"] = _s(build.compiler)
        commands = build_commands(build)
        if commands:
            b["command"] = _s(" && ".join(f"({c})" for c in commands))
        cfg = meta.get("config") or {}
        if cfg.get("base"):
            frags = [Path(str(f.get("file", ""))).name for f in cfg.get("fragments") or []]
            b["config_name"] = _s("+".join([str(cfg["base"]), *frags]))
        dur = (meta.get("durations") or {}).get("total")
        if isinstance(dur, int | float):
            b["duration"] = float(dur)
        bt = _time(meta.get("built_at"))
        if bt:
            b["start_time"] = bt
        if meta.get("warnings"):
            b["misc"]["warnings"] = len(meta["warnings"])
            b["misc"]["new_warnings"] = len(meta.get("new_warnings") or [])
        builds_out.append(b)

    host = run.host.hostname
    prefix = f"{ORIGIN}:{run.run_id}:"
    for c in run.cells:
        build_id = f"{prefix}{c.kernel}:build"
        comment = _s(f"QEMU -cpu {c.cpu_qemu or c.cpu} ({c.accel or '?'})")
        env = {"comment": comment, "misc": {"cpu_model": c.cpu, "qemu_cpu": c.cpu_qemu, "accel": c.accel,
                                            "facts": c.facts, "filtered_features": c.filtered_features,
                                            "host": host}}
        case_env = {"comment": comment, "misc": {"cpu_model": c.cpu, "accel": c.accel}}
        url = f"{base_url.rstrip('/')}/{c.files['console']}" if base_url and "console" in c.files else None
        tpath = path_part(c.test, "test")
        crash = "\n".join(x.line for x in c.crashes)
        misc = {"farm_status": c.status, "cell": c.id, "stage": c.stage, "reason": c.reason, "attempts": c.attempts,
                "files": c.files, "timings": c.timings, "qemu_command": c.qemu_command}
        tests.append(_test(build_id, c.status, f"{prefix}{c.id}", tpath, crash or c.reason, misc, env, url,
                           c.timings.get("test")))
        lost = c.status in ("CRASH", "TIMEOUT")  # the kernel did not survive the test, whatever a case said
        seen = set()
        for k in c.cases:
            ident = f"{prefix}{c.id}:{k.number}"
            if ident in seen:
                ident += f":{len(seen)}"
            seen.add(ident)
            part = path_part(k.name, f"case{k.number}")
            t = {"id": ident, "origin": ORIGIN, "build_id": build_id, "path": f"{tpath}.{part}",
                 "environment": case_env, "misc": {"case": k.name} if part != k.name else {},
                 "status": k.status.kcidb}
            if k.status.kcidb != k.status:
                t["misc"]["farm_status"] = str(k.status)
            if k.reason:
                t["misc"]["reason"] = k.reason
            if lost and k.status == "PASS":
                t["misc"]["cell_status"] = str(c.status)
            if k.diagnostics:
                t["log_excerpt"] = _s("\n".join(k.diagnostics))[-EXCERPT:]
            tests.append(t)
    return {"version": dict(VERSION), "checkouts": checkouts, "builds": builds_out, "tests": tests}


def write(run: Run, run_dir: Path, base_url: str | None = None) -> Path:
    with quiet_gc():
        return atomic_write(run_dir / "kcidb.json", dumps(render(run, base_url)))

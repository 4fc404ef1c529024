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

from ..results.run import Cell, Run
from .common import atomic_write, build_commands, kernel_builds, quiet_gc

ORIGIN = "farm"
VERSION = {"major": 5, "minor": 3}
STATUS = {"PASS": "PASS", "FAIL": "FAIL", "SKIP": "SKIP", "CRASH": "FAIL", "TIMEOUT": "ERROR", "FLAKY": "FAIL",
          "ERROR": "MISS", "PENDING": "MISS"}
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
    hashes = [str(p.get("sha256", "")) for p in patches if isinstance(p, dict)]
    if not hashes or not all(_SHA256.match(h) for h in hashes):
        return ""
    return hashlib.sha256("".join(h + "\n" for h in hashes).encode()).hexdigest()


def _build_status(kernel: str, build: dict, cells: list[Cell]) -> str | None:
    if build.get("image_sha256") or build.get("prebuilt"):
        return "PASS"
    failed = [c for c in cells if c.kernel == kernel and c.stage == "build" and c.status == "ERROR"]
    if failed:
        return "FAIL" if "does not build" in failed[0].reason else "ERROR"
    return None


def _test(build_id: str, status: str, ident: str, path: str, excerpt: str, misc: dict, env: dict,
          log_url: str | None, duration: float | None) -> dict:
    t = {"id": ident, "origin": ORIGIN, "build_id": build_id, "path": path, "environment": env, "misc": misc}
    if status in STATUS:
        t["status"] = STATUS[status]
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
    builds_meta = kernel_builds(run)
    kernels = list(dict.fromkeys([*(c.kernel for c in run.cells), *run.kernels]))
    checkouts, builds, tests = [], [], []
    for k in kernels:
        info = run.kernels.get(k) or {}
        meta = builds_meta.get(k) or {}
        src = meta.get("source") if isinstance(meta.get("source"), dict) else {}
        co = {"id": f"{ORIGIN}:{run.run_id}:{k}", "origin": ORIGIN, "tree_name": _s(info.get("source") or k),
              "patchset_hash": patchset_hash(meta.get("patches") or []),
              "comment": _s(info.get("description") or k),
              "misc": ({"kernel": k, "baseline": info.get("baseline"), "source": info.get("source"),
                                 "patches": info.get("patches") or [], "digest": src.get("digest"),
                                 "kernel_version": meta.get("kernel_version")})}
        if src.get("commit") and _SHA1.match(str(src["commit"])):
            co["git_commit_hash"] = src["commit"]
        if started:
            co["start_time"] = started
        status = _build_status(k, meta, run.cells)
        if status == "PASS":
            co["valid"] = True  # the source was obtained and the series applied: it built
        checkouts.append(co)
        b = {"id": f"{ORIGIN}:{run.run_id}:{k}:build", "origin": ORIGIN, "checkout_id": co["id"],
             "architecture": "x86_64",
             "misc": ({k2: meta.get(k2) for k2 in ("key", "cache_hit", "kernel_release", "prebuilt",
                                                            "release", "image_sha256", "image_size", "incremental")
                                if meta.get(k2) is not None})}
        if status:
            b["status"] = status
        if meta.get("compiler"):
            b["compiler"] = _s(meta["compiler"])
        commands = build_commands(meta)
        if commands:
            b["command"] = _s(" && ".join(f"({c})" for c in commands))
        cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        if cfg.get("base"):
            frags = [Path(str(f.get("file", ""))).name for f in cfg.get("fragments") or [] if isinstance(f, dict)]
            b["config_name"] = _s("+".join([str(cfg["base"]), *frags]))
        dur = (meta.get("durations") or {}).get("total") if isinstance(meta.get("durations"), dict) else None
        if isinstance(dur, int | float):
            b["duration"] = float(dur)
        bt = _time(meta.get("built_at"))
        if bt:
            b["start_time"] = bt
        if meta.get("warnings"):
            b["misc"]["warnings"] = len(meta["warnings"])
            b["misc"]["new_warnings"] = len(meta.get("new_warnings") or [])
        builds.append(b)

    host = run.host.get("hostname")
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
        crash = "\n".join(str(x.get("line", "")) for x in c.crashes if isinstance(x, dict))
        misc = {"farm_status": c.status, "cell": c.id, "stage": c.stage, "reason": c.reason, "attempts": c.attempts,
                "files": c.files, "timings": c.timings, "qemu_command": c.qemu_command}
        tests.append(_test(build_id, c.status, f"{prefix}{c.id}", tpath, crash or c.reason, misc, env, url,
                           c.timings.get("test")))
        lost = c.status in ("CRASH", "TIMEOUT")  # the kernel did not survive the test, whatever a case said
        seen = set()
        for k in c.cases:
            number = k.get("number", "")
            name = str(k.get("name", ""))
            status = str(k.get("status", ""))
            ident = f"{prefix}{c.id}:{number}"
            if ident in seen:
                ident += f":{len(seen)}"
            seen.add(ident)
            part = path_part(name, f"case{number}")
            t = {"id": ident, "origin": ORIGIN, "build_id": build_id, "path": f"{tpath}.{part}",
                 "environment": case_env, "misc": {"case": name} if part != name else {}}
            if status in STATUS:
                t["status"] = STATUS[status]
            else:
                t["misc"]["farm_status"] = status
            if k.get("reason"):
                t["misc"]["reason"] = k["reason"]
            if lost and status == "PASS":
                t["misc"]["cell_status"] = c.status
            if k.get("diagnostics"):
                t["log_excerpt"] = _s("\n".join(str(d) for d in k["diagnostics"]))[-EXCERPT:]
            tests.append(t)
    return {"version": dict(VERSION), "checkouts": checkouts, "builds": builds, "tests": tests}


def write(run: Run, run_dir: Path, base_url: str | None = None) -> Path:
    with quiet_gc():
        return atomic_write(run_dir / "kcidb.json", dumps(render(run, base_url)))

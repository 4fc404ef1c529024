"""A patch series as it arrives on a mailing list, made into a kernel entry of the run (`farm run --series`).

    series = intake("v2.mbox", workdir)            # an mbox, a folder of git format-patch files, b4 am output
    series = intake("<msgid@host>", workdir, mbox) # a lore message-id, through `b4 am` (-m MBOX: offline)

The series' messages are read with Python's email parser: the cover letter (patch 0/N) gives the subject,
version, message-id and the `base-commit:` line git format-patch --base writes; each patch is written to a
quilt-style folder (series + NNNN-*.patch) that the kernel build applies like any patch set. What it records
goes into run.json (SeriesRecord) and every report; the reply (`farm reply`) answers its message-id.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import mailbox
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from .errors import InputError, SeriesError
from .results.run import PatchApplies, SeriesRecord

_SUBJECT = re.compile(r"^\s*\[(?P<tags>[^\]]*)\]\s*(?P<title>.*)$", re.S)
_INDEX = re.compile(r"(?:^|\s)(?P<n>\d+)/(?P<m>\d+)(?:\s|$)")
_VERSION = re.compile(r"(?:^|\s)[vV](?P<v>\d+)(?:\s|$)")
_BASE = re.compile(r"^base-commit:\s*(?P<sha>[0-9a-f]{7,40})\s*$", re.M)
_LINK = re.compile(r"^Link:\s*(?P<url>https?://\S+)\s*$", re.M)


@dataclass
class Message:
    msg: EmailMessage
    subject: str
    index: int  # 0 for a cover letter, 1.. for patches
    total: int
    version: int
    message_id: str
    body: str
    raw: bytes

    @property
    def is_patch(self) -> bool:
        return self.index > 0 or (self.total == 0 and "\ndiff --git " in f"\n{self.body}")


@dataclass
class Series:
    record: SeriesRecord
    folder: Path  # the patches as a quilt series (series file + patch files), applied in order
    patches: list[Path]


def _message(raw: bytes, where: str) -> Message:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    subject = " ".join(str(msg.get("Subject", "")).split())
    m = _SUBJECT.match(subject)
    tags = m.group("tags") if m else ""
    idx = _INDEX.search(tags)
    ver = _VERSION.search(tags)
    body = msg.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    message_id = str(msg.get("Message-ID", "")).strip().strip("<>")
    if not subject:
        raise InputError(f"{where}: a message without a Subject: not a patch email")
    return Message(msg, subject, int(idx.group("n")) if idx else 0, int(idx.group("m")) if idx else 0,
                   int(ver.group("v")) if ver else 1, message_id, text, raw)


def _messages(path: Path) -> list[Message]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".patch", ".eml", ".mbx", ".cover",
                                                                                    ".mbox"))
        if not files:
            raise InputError(f"--series {path}: no .patch, .mbx or .mbox files in the folder")
        out = []
        for f in files:
            out += _messages(f)
        return out
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"--series {path}: cannot read: {e.strerror}") from None
    if data.startswith(b"From "):  # an mbox: one or more messages
        box = mailbox.mbox(str(path), create=False)
        try:
            return [_message(bytes(m), f"{path}: message {i + 1}") for i, m in enumerate(box)]
        finally:
            box.close()
    return [_message(data, str(path))]


def _b4(message_id: str, workdir: Path, mbox: Path | None) -> Path:
    """`b4 am` a series by its message-id into workdir (from a local mbox with -m: no network needed)."""
    out = workdir / "b4"
    out.mkdir(parents=True, exist_ok=True)
    argv = ["b4", "--offline-mode", "am", "--no-cache", "-o", str(out)]  # offline: only -m, never the network
    if mbox is not None:
        argv += ["-m", str(mbox)]
    try:
        proc = subprocess.run([*argv, message_id], capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise InputError("--series MESSAGE-ID needs b4 (Debian package b4)") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"--series {message_id}: b4 am did not finish within 300 s") from None
    made = sorted(out.glob("*.mbx"))
    if proc.returncode != 0 or not made:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise InputError(f"--series {message_id}: b4 am found no series ({why[-1] if why else 'no output'})")
    return out


def looks_like_message_id(arg: str) -> bool:
    return not Path(arg).exists() and "@" in arg and "/" not in arg.strip("<>")


def intake(arg: str, workdir: Path, mbox: Path | None = None) -> Series:
    """Read a series; write its patches to workdir/patches (a quilt series)."""
    if looks_like_message_id(arg):
        source = _b4(arg.strip("<>"), workdir, mbox)
    else:
        source = Path(arg)
        if not source.exists():
            raise InputError(f"--series {arg}: no such file or folder (or a message-id: give <id@host>)")
    messages = _messages(source)
    patches = [m for m in messages if m.is_patch]
    if not patches:
        raise InputError(f"--series {arg}: no patches in it (only {len(messages)} message(s) without a diff)")
    versions = {m.version for m in patches}
    if len(versions) > 1:
        several = ", ".join(f"v{v}" for v in sorted(versions))
        raise InputError(f"--series {arg}: patches of several versions ({several}): give one version of the series")
    patches.sort(key=lambda m: m.index)
    totals = {m.total for m in patches if m.total}
    if totals and len(patches) != max(totals):
        have = ", ".join(str(m.index) for m in patches)
        raise InputError(f"--series {arg}: the series has {max(totals)} patches, these are {have}: "
                         "a patch is missing")
    cover = next((m for m in messages if m.index == 0 and not m.is_patch), None)
    head = cover or patches[0]
    text = "\n".join(m.body for m in [head, *patches])
    base = _BASE.search(text)
    link = _LINK.search(text)
    folder = workdir / "patches"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, m in enumerate(patches, 1):
        title = re.sub(r"[^A-Za-z0-9]+", "-", (_SUBJECT.match(m.subject) or _SUBJECT.match("[] " + m.subject))
                       .group("title")).strip("-")[:52]
        f = folder / f"{i:04d}-{title or 'patch'}.patch"
        f.write_bytes(m.raw)
        files.append(f)
    (folder / "series").write_text("".join(f"{f.name}\n" for f in files))
    record = SeriesRecord(
        subject=head.subject, version=head.version, message_id=head.message_id,
        link=link.group("url") if link else "", source=arg,
        patches=[{"subject": m.subject, "message_id": m.message_id, "file": f.name} for m, f in zip(patches, files,
                                                                                                    strict=True)],
        base_commit=base.group("sha") if base else "",
    )
    record.author = str(head.msg.get("From", ""))
    record.cc = [str(a) for h in ("To", "Cc") for a in (head.msg.get(h).addresses if head.msg.get(h) else ())]
    return Series(record, folder, files)


# --- the series as kernel entries of the run ------------------------------------------------------

SUFFIX = "+series"


def bases(catalog, job) -> list[str]:
    """The job's kernels a series goes on top of: built from source, with no patches of their own."""
    found = [k for k in job.kernels if catalog.kernels[k].source and not catalog.kernels[k].patches]
    if not found:
        raise InputError(f"{job.path}: --series needs a kernel built from source without patches in the job "
                         f"(its kernels: {', '.join(job.kernels)})")
    return found


def add_kernels(catalog, job, series: Series, log=print) -> list[str]:
    """One kernel entry per base kernel of the job, `<base>+series`: the base with the series on top, built on
    the series' base-commit where the source can honour it. The series stands in for the job's own patched
    kernels of that base (it inherits what they declare they provide, so a feature the job tests cannot
    silently vanish). Records the base and where each patch applies in series.record; returns the run's
    kernels: each base, and each series kernel the series applies to."""
    record = series.record
    used, notes, run = [], [], []
    for base_name in bases(catalog, job):
        base = catalog.kernels[base_name]
        provides = [p for k in job.kernels if catalog.kernels[k].baseline == base_name
                    for p in catalog.kernels[k].provides]
        source, base_used, note = _base_source(base.source, record.base_commit)
        name = base_name + SUFFIX
        kernel = dataclasses.replace(
            base, name=name, description=record.subject or f"{base_name} with the series", source=source,
            patches=(*base.patches, series.folder), extends=base_name, baseline=base_name, checkpatch=True,
            provides=tuple(dict.fromkeys([*base.provides, *provides])))
        entries = _applies(source, series.patches)
        record.applies[name] = entries
        used.append(f"{base_name}: {base_used}")
        if note:
            notes.append(f"{base_name}: {note}")
        run.append(base_name)
        if all(e.applies for e in entries):
            catalog.kernels[name] = kernel
            run.append(name)
        else:
            bad = next(e for e in entries if not e.applies)
            log(f"the series does not apply to {base_name}: {bad.patch}: {bad.detail}")
    record.base_used = "; ".join(used)
    record.base_note = "; ".join(notes)
    if not any(k.endswith(SUFFIX) for k in run):
        where = "; ".join(f"{k}: {_first_bad(v)}" for k, v in record.applies.items())
        raise SeriesError(f"--series {record.source}: applies to none of the job's kernels ({where})")
    return run


def _first_bad(entries: list[PatchApplies]) -> str:
    bad = next(e for e in entries if not e.applies)
    return f"{bad.patch}: {bad.detail}"


def _base_source(source, base_commit: str):
    """(the Source to build, what the base is, why it is not the series' base-commit or "").

    A git base-commit is looked up the way the build resolves a source's ref, so what is found here is
    exactly what gets built."""
    from .kernel import source as ksource
    from .kernel.errors import BuildError

    if source.kind == "git":
        configured = ksource.resolve(source)
        at = f"{source.location} at {source.ref or 'HEAD'} {configured.commit}"
        if not base_commit:
            return source, at, "no base-commit in the series"
        try:
            found = ksource.resolve(dataclasses.replace(source, ref=base_commit)).commit
        except BuildError:
            return source, at, (f"base-commit {base_commit} is not in {configured.path}: applied on "
                                f"{source.ref or 'HEAD'} instead")
        return dataclasses.replace(source, ref=found), f"{source.location} at base-commit {found}", ""
    tree = _tree(source)
    what = f"{source.location} ({source.kind} source, Linux {ksource.kernel_version(tree)})"
    note = (f"base-commit {base_commit} cannot be checked out: a {source.kind} source has no commits; "
            "applied on the tree as it is") if base_commit else ""
    return source, what, note


def _tree(source) -> Path:
    """The unpacked tree of a debian or dir source (a debian tarball is unpacked once, into the cache)."""
    from .kernel import source as ksource
    from .kernel.run import Runner

    res = ksource.resolve(source)
    return ksource.pristine_tree(res, Runner(), lambda line: None)


def _applies(source, patches: list[Path]) -> list[PatchApplies]:
    """Try the patches in order on the base tree without touching it (0-day's "cannot apply to"): a git
    source through a scratch index of its base commit, an unpacked tree with `git apply --check` of the
    patches so far. After the first patch that does not apply the rest are not tried."""
    out: list[PatchApplies] = []
    with tempfile.TemporaryDirectory(prefix="farm-applies-") as scratch:
        if source.kind == "git":
            from .kernel import source as ksource

            repo = ksource.resolve(source).path
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            commit = source.ref or "HEAD"
            subprocess.run(["git", "-C", str(repo), "read-tree", commit], env={**os.environ, **env},
                           capture_output=True, check=True)

            def attempt(i: int) -> subprocess.CompletedProcess:
                return subprocess.run(["git", "-C", str(repo), "apply", "--cached", str(patches[i])],
                                      env={**os.environ, **env}, capture_output=True, text=True)
        else:
            tree = _tree(source)
            env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}  # never a repository above the tree

            def attempt(i: int) -> subprocess.CompletedProcess:
                return subprocess.run(["git", "apply", "--check", *map(str, patches[: i + 1])], cwd=tree,
                                      env={**os.environ, **env}, capture_output=True, text=True)

        for i, patch in enumerate(patches):
            if out and not out[-1].applies:
                out.append(PatchApplies(patch.name, False, "not tried: an earlier patch does not apply"))
                continue
            proc = attempt(i)
            errors = [line.removeprefix("error: ") for line in proc.stderr.splitlines() if line.startswith("error:")]
            out.append(PatchApplies(patch.name, proc.returncode == 0, "; ".join(errors[:2]) if proc.returncode else ""))
    return out


def again(record: SeriesRecord, out: Path) -> Series:
    """The series of a run being resumed: its record and the patches intake wrote into the run folder."""
    folder = out / "series" / "patches"
    if not (folder / "series").is_file():
        raise InputError(f"--resume {out}: the run came from --series but {folder} is gone")
    files = [folder / line.strip() for line in (folder / "series").read_text().splitlines() if line.strip()]
    return Series(record, folder, files)

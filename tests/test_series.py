"""`farm run --series`: a series made with `git format-patch --base --cover-letter` goes on top of the job's
unpatched kernels, at its base-commit where the source is git, with a per-patch "applies to" table.

The quick tests use a small git repository (no kernel build: they stop before building); the end-to-end
test builds a real kernel from a git clone of the linux-6.1 tree and boots it.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from farm import series as intake
from farm.catalog import Catalog

from .conftest import git, run_farm


def make_series(repo: Path, out: Path, edit: tuple[str, str, str], base: str, branch: str = "topic") -> Path:
    """One patch on a branch from `base` (file, old line, new line), posted as git format-patch --base
    --cover-letter would post it: an mbox of the cover letter and the patch."""
    git(repo, "checkout", "-q", "-b", branch, base)
    path, old, new = edit
    f = repo / path
    f.write_text(f.read_text().replace(old, new))
    git(repo, "commit", "-qam", "x86/fpu: say what the series does")
    folder = out / "posted"
    git(repo, "format-patch", "-q", "--thread", "--cover-letter", "--base", base, "-v", "2", "-o", str(folder),
        f"{base}..{branch}", "--subject-prefix", "PATCH")
    cover = next(folder.glob("*0000-cover-letter.patch"))
    cover.write_text(cover.read_text().replace("*** SUBJECT HERE ***", "the series under test")
                     .replace("*** BLURB HERE ***", "Link: https://lore.kernel.org/r/cover@example.org\n"))
    git(repo, "checkout", "-q", "master")
    mbox = out / "series.mbox"
    mbox.write_text("".join(p.read_text() for p in sorted(folder.glob("*.patch"))))
    return mbox


@pytest.fixture
def small(tmp_path: Path, farm_root: Path):
    """A farm root with two source kernels of a small tree: `mini-git` (git: base A, the line changed in B,
    HEAD moved on to C) and `mini-dir` (an unpacked copy of A, where the series cannot apply); a series
    posted against B."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    (repo / "main.c").write_text("int a;\nint changed_by_b = 0;\nint c;\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "A")
    shutil.copytree(repo, tmp_path / "tree-a", ignore=shutil.ignore_patterns(".git"))
    (repo / "main.c").write_text("int a;\nint changed_by_b = 1;\nint c;\n")
    git(repo, "commit", "-qam", "B")
    base = git(repo, "rev-parse", "HEAD")
    mbox = make_series(repo, tmp_path, ("main.c", "changed_by_b = 1", "changed_by_b = 2"), base)
    (repo / "other.c").write_text("int moved_on;\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "C")
    kernels = farm_root / "kernels"
    (kernels / "mini-git.yaml").write_text(f"name: mini-git\nsource: {{git: {repo}}}\nconfig: {{base: tinyconfig}}\n")
    (kernels / "mini-dir.yaml").write_text(f"name: mini-dir\nsource: {{dir: {tmp_path / 'tree-a'}}}\n"
                                           "config: {base: tinyconfig}\n")
    (kernels / "mini-patched.yaml").write_text("name: mini-patched\nextends: mini-git\nbaseline: mini-git\n"
                                               "patches: [patches/xcr0]\nprovides: [xcr0]\n")
    (farm_root / "jobs" / "mini.yaml").write_text("name: mini\nkernels: [mini-git, mini-patched, mini-dir]\n"
                                                  "cpus: [qemu64]\ntests: [cpuinfo]\n")
    (farm_root / "jobs" / "mini-dir.yaml").write_text("name: mini-dir\nkernels: [mini-dir]\ncpus: [qemu64]\n"
                                                      "tests: [cpuinfo]\n")
    return {"root": farm_root, "repo": repo, "base": base, "mbox": mbox, "tmp": tmp_path}


def test_series_goes_on_the_unpatched_kernels_at_its_base_commit(small, monkeypatch):
    monkeypatch.setenv("FARM_ROOT", str(small["root"]))
    catalog = Catalog(small["root"])
    job = catalog.job("mini")
    series = intake.intake(str(small["mbox"]), small["tmp"] / "run" / "series")
    assert series.record.base_commit == small["base"]
    assert series.record.subject == "[PATCH v2 0/1] the series under test"
    assert series.record.version == 2 and series.record.link == "https://lore.kernel.org/r/cover@example.org"
    assert series.record.author == "A U Thor <author@example.org>"

    kernels = intake.add_kernels(catalog, job, series, log=lambda line: None)

    # The patched kernel of the job is replaced by the series; the dir tree (A) cannot take it.
    assert kernels == ["mini-git", "mini-git+series", "mini-dir"]
    made = catalog.kernels["mini-git+series"]
    assert made.source.ref == small["base"]  # B, not HEAD (C)
    assert git(small["repo"], "rev-parse", "HEAD") != small["base"]
    assert made.baseline == "mini-git" and made.patches[-1] == series.folder and made.checkpatch
    assert "xcr0" in made.provides  # what the job's patched kernel of that base declares
    assert [e.applies for e in series.record.applies["mini-git+series"]] == [True]
    bad = series.record.applies["mini-dir+series"]
    assert [e.applies for e in bad] == [False] and "main.c" in bad[0].detail
    assert "mini-dir+series" not in catalog.kernels
    assert f"base-commit {small['base']}" in series.record.base_used
    assert "mini-dir: base-commit" in series.record.base_note and "no commits" in series.record.base_note


def test_a_base_commit_the_tree_lacks_falls_back_to_the_configured_base_and_says_so(small, monkeypatch):
    monkeypatch.setenv("FARM_ROOT", str(small["root"]))
    missing = "0123456789abcdef0123456789abcdef01234567"
    mbox = small["mbox"]
    mbox.write_text(mbox.read_text().replace(f"base-commit: {small['base']}", f"base-commit: {missing}"))
    catalog = Catalog(small["root"])
    series = intake.intake(str(mbox), small["tmp"] / "run" / "series")
    assert series.record.base_commit == missing
    intake.add_kernels(catalog, catalog.job("mini"), series, log=lambda line: None)
    made = catalog.kernels["mini-git+series"]
    assert made.source.ref is None  # the configured base: HEAD
    assert f"base-commit {missing} is not in {small['repo']}" in series.record.base_note
    assert [e.applies for e in series.record.applies["mini-git+series"]] == [True]  # C still has B's line


def test_a_series_that_applies_nowhere_is_exit_1_naming_kernel_and_patch(small):
    proc = run_farm("run", "--job", "mini-dir", "--series", str(small["mbox"]), "--out",
                    str(small["tmp"] / "out"), root=small["root"], timeout=120)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "applies to none of the job's kernels" in last and "mini-dir+series" in last and "main.c" in last
    assert "Traceback" not in proc.stderr


def test_a_message_id_goes_through_b4_am_offline(small, monkeypatch):
    monkeypatch.setenv("FARM_ROOT", str(small["root"]))
    cover = email.message_from_bytes(small["mbox"].read_bytes().split(b"\nFrom ")[0], policy=email.policy.default)
    msgid = str(cover["Message-Id"]).strip("<>")
    series = intake.intake(f"<{msgid}>", small["tmp"] / "run" / "series", small["mbox"])
    assert series.record.message_id == msgid and series.record.base_commit == small["base"]
    assert len(series.patches) == 1 and "changed_by_b = 2" in series.patches[0].read_text()


@pytest.mark.parametrize("arg, message", [
    ("/nonexistent/series.mbox", "no such file or folder"),
    ("<missing@example.org>", "b4 am found no series"),
])
def test_bad_series_arguments_are_one_line_exit_2(small, arg, message):
    empty = small["tmp"] / "empty.mbox"
    empty.write_text("")
    proc = run_farm("run", "--job", "mini", "--series", arg, "--series-mbox", str(empty), "--out",
                    str(small["tmp"] / "out"), root=small["root"], timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_ref_is_only_for_git_sources(farm_root):
    (farm_root / "kernels" / "bad.yaml").write_text("name: bad\nsource: {debian: linux-source-6.1, ref: v6.1}\n"
                                                    "config: {base: tinyconfig}\n")
    proc = run_farm("check", root=farm_root)
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "'ref'" in proc.stderr and "debian has none" in proc.stderr


# --- end to end: a real kernel from a git clone -------------------------------------------------------

DOC = "Documentation/x86/xstate.rst"


@pytest.fixture(scope="module")
def linux_git(tmp_path_factory) -> Path:
    """A git repository of Debian's linux-6.1 tree (commit A), made once per cache and reused: the farm's own
    unpacked pristine tree is committed as it is."""
    from farm.kernel import source as ksource
    from farm.kernel.run import Runner
    from farm.paths import cache_root

    repo = cache_root() / "test-linux-git"
    if not (repo / ".git" / "farm-test-complete").is_file():
        res = ksource.resolve(Catalog(Path(__file__).resolve().parent.parent).kernels["linux-6.1"].source)
        pristine = ksource.pristine_tree(res, Runner(), print)
        shutil.rmtree(repo, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(repo)], check=True)
        git(repo, "init", "-q", "-b", "master")
        git(repo, "add", "-A", "-f")  # Debian's tree ignores everything (/* in its .gitignore)
        git(repo, "commit", "-qm", "linux-6.1 as Debian ships it")
        (repo / ".git" / "farm-test-complete").write_text("")
    git(repo, "checkout", "-q", "-f", "master")
    git(repo, "reset", "-q", "--hard", git(repo, "rev-list", "--max-parents=0", "HEAD"))
    for branch in ("topic",):
        subprocess.run(["git", "-C", str(repo), "branch", "-D", branch], capture_output=True)
    return repo


def test_series_end_to_end_from_a_git_clone(linux_git: Path, farm_root: Path, tmp_path: Path):
    """Base commit B (a line of Documentation changed), HEAD moved on to C; the series posted against B
    changes that line again. The series goes on the git kernel at B and builds; it does not apply to the
    Debian tarball kernel (which lacks B), and the reports and the reply say so."""
    repo = linux_git
    doc = repo / DOC
    old = doc.read_text().splitlines()[0]
    doc.write_text(doc.read_text().replace(old, old + " (B)", 1))
    git(repo, "commit", "-qam", "B: a line of documentation")
    base = git(repo, "rev-parse", "HEAD")
    mbox = make_series(repo, tmp_path, (DOC, old + " (B)", old + " (the series)"), base)
    (repo / "farm-moved-on").write_text("C\n")
    git(repo, "add", "-f", "farm-moved-on")
    git(repo, "commit", "-qm", "C: the tree moved on")

    kernels = farm_root / "kernels"
    (kernels / "linux-git.yaml").write_text(
        f"name: linux-git\nextends: linux-6.1\nsource: {{git: {repo}}}\n")
    (farm_root / "jobs" / "series.yaml").write_text(
        "name: series\nkernels: [linux-git, linux-6.1]\ncpus: [Broadwell]\ntests: [cpuinfo]\n")
    out = tmp_path / "run"
    proc = run_farm("run", "--job", "series", "--series", str(mbox), "--out", str(out), root=farm_root,
                    timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert sorted(c["kernel"] for c in run["cells"]) == ["linux-6.1", "linux-git", "linux-git+series"]
    assert {c["status"] for c in run["cells"]} == {"PASS"}
    assert run["kernels"]["linux-git+series"]["source"] == f"{repo}@{base}"
    assert run["series"]["base_commit"] == base and "not" not in run["series"]["base_note"].split("linux-6.1")[0]
    applies = run["series"]["applies"]
    assert [e["applies"] for e in applies["linux-git+series"]] == [True]
    assert [e["applies"] for e in applies["linux-6.1+series"]] == [False]
    summary = (out / "summary.txt").read_text()
    assert all(len(line) <= 72 for line in summary.splitlines())
    flat = " ".join(summary.split())  # the reply is wrapped at 72 columns; a long patch name moves to a new line
    assert "Series: [PATCH v2 0/1] the series under test" in flat
    assert f"base-commit {base}" in flat
    assert "Does not apply to linux-6.1+series at 0001-" in flat
    html = (out / "report.html").read_text()
    assert "linux-6.1+series" in html and base in html
    cover_id = run["series"]["message_id"]
    kcidb = json.loads((out / "kcidb.json").read_text())
    checkout = next(c for c in kcidb["checkouts"] if c["misc"]["kernel"] == "linux-git+series")
    assert checkout["message_id"] == cover_id and checkout["misc"]["series"]["base_commit"] == base
    assert f'name="series.message_id" value="{cover_id}"' in (out / "junit.xml").read_text()

    reply = tmp_path / "reply.eml"
    proc = run_farm("reply", str(out), "--out", str(reply), root=farm_root)
    assert proc.returncode == 0, proc.stderr
    msg = email.message_from_bytes(reply.read_bytes(), policy=email.policy.default)
    assert msg["In-Reply-To"] == f"<{cover_id}>"
    assert msg["Subject"] == "Re: [PATCH v2 0/1] the series under test"
    assert "Tested-by:" in msg.get_body(preferencelist=("plain",)).get_content()

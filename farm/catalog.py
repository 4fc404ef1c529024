"""The catalog: cpumodels/, kernels/, guests/tests/ and jobs/ loaded into typed objects.

Every validation error of a data file is raised here, as an InputError naming file:line and field.
Everything after the catalog works on these objects and never reads the YAML again.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import datafile
from .datafile import Doc, Fields
from .errors import InputError
from .vm.accel import TCG_THREADS


@dataclass(frozen=True)
class CpuModel:
    name: str
    qemu: str  # the -cpu argument
    aliases: tuple[str, ...]
    vendor: str
    purpose: str
    path: Path


@dataclass(frozen=True)
class Prebuilt:
    """A kernel someone else built: an image on disk (a glob; newest wins) and its modules."""

    image: str
    modules: str | None  # folder of .ko files; "{release}" is the kernel release
    load: tuple[str, ...]  # modules to insmod in order at boot


@dataclass(frozen=True)
class Source:
    kind: str  # "debian" (a linux-source-X package's tarball), "git" (a tree) or "dir" (an unpacked tree)
    location: str
    ref: str | None = None  # git: the commit, tag or branch to build (default HEAD); a series' base-commit


@dataclass(frozen=True)
class ConfigRecipe:
    base: str  # tinyconfig, defconfig, ...
    fragments: tuple[Path, ...]


@dataclass(frozen=True)
class Kernel:
    name: str
    description: str
    path: Path
    cmdline: str
    prebuilt: Prebuilt | None = None
    source: Source | None = None
    config: ConfigRecipe | None = None
    patches: tuple[Path, ...] = ()  # patch-series folders or mbox files, applied in order
    image: str = "arch/x86/boot/bzImage"
    extends: str | None = None
    baseline: str | None = None  # the kernel this one is compared against
    checkpatch: bool = False  # run scripts/checkpatch.pl --strict on its patches; the result is reported
    # Features this kernel has (e.g. xcr0 for the ARCH_SET_XCR0 series): inherited through extends, passed to
    # the guest as FARM_PROVIDES, and a test of a provided feature that skips it fails.
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class SelftestBuild:
    """Programs built from a kernel entry's own source tree (e.g. tools/testing/selftests/x86)."""

    kernel: str  # the kernel entry whose source tree is used (with that entry's patches applied to tools/)
    dir: str  # folder inside the tree, built with make OUTPUT=...
    select: str = "*"  # which built files are the tests (a glob)
    make: tuple[str, ...] = ()  # extra make variables, NAME=value
    exclude: tuple[str, ...] = ()  # programs the glob matches that are not this test's (another test runs them)
    program: str = ""  # one make target that is the whole test (its own KTAP), instead of a folder of programs


@dataclass(frozen=True)
class Known:
    """How a cell is known to end under an accelerator: XFAIL when it does, XPASS when it passes instead."""

    status: str  # CRASH, FAIL or TIMEOUT
    match: str  # a regular expression the cell's reason must match (the crash line, the failed cases)
    reason: str


@dataclass(frozen=True)
class Test:
    name: str
    description: str
    path: Path
    run: tuple[str, ...]  # argv in the guest; argv[0] is a payload name, found under the payload dir
    sources: tuple[Path, ...] = ()  # C sources built static with the host compiler
    cflags: tuple[str, ...] = ()
    binary: Path | None = None  # a prebuilt static binary (or a folder of them) instead of sources
    selftests: SelftestBuild | None = None  # a folder of programs built from a kernel tree
    format: str = "ktap"  # "ktap" or "exit-code"
    timeout: float = 120.0
    case_timeout: float = 60.0  # each program of a folder test
    # Programs of a folder test that cannot work under an accelerator: {"tcg": {"prog": "why"}}. They are
    # reported as SKIP with the reason (visible in every report), never silently left out.
    skip: dict = field(default_factory=dict)
    kind: str = ""  # which of TEST_KINDS makes its programs
    # Programs of a folder test known to fail under an accelerator: {"tcg": {"prog": (exit status, "why")}}.
    # They run; the recorded failure is XFAIL (shown with why), a pass XPASS, anything else a failure.
    xfail: dict = field(default_factory=dict)
    # The whole cell known to end a certain way under an accelerator: {"tcg": Known(...)} (a program that
    # oopses the emulated guest: its own test, so it cannot take the others down).
    known: dict = field(default_factory=dict)
    checks: tuple[str, ...] = ()  # the kernel features it tests: on a kernel that provides one, a SKIP is a FAIL


@dataclass(frozen=True)
class Timeouts:
    build: float = 3600.0
    boot: float = 60.0
    test: float | None = None  # None: each test's own timeout


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    path: Path
    kernels: tuple[str, ...]
    cpus: tuple[str, ...]
    tests: tuple[str, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 1
    memory_mb: int = 512
    smp: int = 2
    tcg_thread: str = "single"  # farm/vm/accel.py TCG_THREADS


# How a test's programs are made; each kind is its fields here and its builder in farm/guest/image.py BUILDERS.
TEST_KINDS = ("sources", "binary", "selftests")


def _result_formats() -> tuple[str, ...]:
    from .verdict import FORMATS  # the verdict's table of result formats is the one list of valid names

    return tuple(FORMATS)


RESULT_FORMATS = _result_formats()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def _name(f: Fields, required: bool = True, default: str | None = None) -> str:
    """A name becomes a folder of the run directory: letters, digits and ._+- only."""
    name = f.str("name", default, required=required)
    if not _NAME.match(name):
        raise InputError(f"{f.doc.where('name')}: field 'name': {name!r} is not a valid name "
                         "(letters, digits and . _ + - only, at most 64)")
    return name
SOURCE_KINDS = ("debian", "git", "dir")
_DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1


class Catalog:
    """All data files of one farm checkout."""

    def __init__(self, root: Path):
        self.root = root
        self.cpus: dict[str, CpuModel] = {}
        self.kernels: dict[str, Kernel] = {}
        self.tests: dict[str, Test] = {}
        self.jobs: dict[str, Path] = {}
        for path in self._files("cpumodels"):
            self._add(self.cpus, _load_cpu(path, self._show(path)), path)
        raw_kernels = {}
        for path in self._files("kernels"):
            doc = datafile.load(path, self._show(path))
            name = _name(Fields(doc, "kernel"))
            if name in raw_kernels:  # both files named: either may be the one to fix
                raise InputError(f"{doc.where('name')}: kernel '{name}' is defined twice (also in "
                                 f"{self._show(raw_kernels[name].path)})")
            raw_kernels[name] = doc
        for name in raw_kernels:
            self.kernels[name] = _resolve_kernel(name, raw_kernels, root / "kernels", [])
        for name, kernel in self.kernels.items():
            if kernel.baseline and kernel.baseline not in self.kernels:
                raise InputError(f"{kernel.path}: field 'baseline': unknown kernel '{kernel.baseline}'")
            if not kernel.prebuilt and not kernel.source:
                raise InputError(f"{kernel.path}: kernel '{name}' has neither 'prebuilt' nor 'source'")
        for path in self._files("guests/tests"):
            self._add(self.tests, _load_test(path, self._show(path)), path)
        for test in self.tests.values():
            if test.selftests:
                k = self.kernels.get(test.selftests.kernel)
                if not k or not k.source:
                    built = ", ".join(n for n, x in self.kernels.items() if x.source) or "none"
                    raise InputError(f"{test.path}: field 'selftests.kernel': '{test.selftests.kernel}' is not a "
                                     f"kernel built from source (known: {built})")
        for path in self._files("jobs"):
            self.jobs[path.stem] = path

    def _files(self, sub: str) -> list[Path]:
        folder = self.root / sub
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())

    def _show(self, path: Path) -> Path:
        try:
            return path.relative_to(Path.cwd())
        except ValueError:
            return path

    def _add(self, table: dict, item, path: Path) -> None:
        if item.name in table:
            raise InputError(f"{self._show(path)}: '{item.name}' is already defined in {table[item.name].path}")
        table[item.name] = item

    # --- jobs -----------------------------------------------------------------------------------

    def job(self, name_or_file: str) -> Job:
        path = Path(name_or_file)
        if not path.is_file():
            if name_or_file not in self.jobs:
                known = ", ".join(sorted(self.jobs)) or "none"
                raise InputError(f"unknown job '{name_or_file}' (not a file; known jobs: {known})")
            path = self.jobs[name_or_file]
        return _load_job(path, self._show(path), self)

    # --- matching names given on the command line -------------------------------------------------

    def match_cpus(self, patterns: list[str]) -> list[str]:
        return _match("CPU model", patterns, {n: m.aliases for n, m in self.cpus.items()}, "--cpu")

    def match_kernels(self, patterns: list[str]) -> list[str]:
        return _match("kernel", patterns, {n: () for n in self.kernels}, "--kernel")

    def match_tests(self, patterns: list[str]) -> list[str]:
        return _match("test", patterns, {n: () for n in self.tests}, "--test")


def _match(what: str, patterns: list[str], names: dict[str, tuple[str, ...]], option: str) -> list[str]:
    """An exact name or alias picks one entry; otherwise a prefix picks every entry it begins.

    `Skylake` gives Skylake-Client and Skylake-Server; `Skylake-Server` or `skx` gives one.
    """
    chosen: list[str] = []
    for pattern in patterns:
        if not pattern.strip():  # an empty prefix would match everything
            raise InputError(f"{option} {pattern!r}: an empty name matches nothing; give a name, alias or prefix")
        want = pattern.strip().lower()
        hits = [n for n, aliases in names.items() if want == n.lower() or want in (a.lower() for a in aliases)]
        if not hits:
            hits = [n for n in names if n.lower().startswith(want)]
        if not hits:
            known = ", ".join(sorted(names)) or "none"
            raise InputError(f"{option} {pattern}: no {what} matches (known: {known})")
        chosen += [h for h in sorted(hits) if h not in chosen]
    return chosen


def _load_cpu(path: Path, shown: Path) -> CpuModel:
    doc = datafile.load(path, shown)
    f = Fields(doc, "CPU model")
    model = CpuModel(
        name=_name(f),
        qemu=f.str("qemu", required=True),
        aliases=tuple(f.str_list("aliases")),
        vendor=f.str("vendor", "unknown"),
        purpose=f.str("purpose", ""),
        path=shown,
    )
    f.done()
    if any(c.isspace() for c in model.qemu) or model.qemu.startswith("-"):
        raise InputError(f"{doc.where('qemu')}: field 'qemu': not a -cpu model name: {model.qemu!r}")
    return model


def _placeholders(text: str, allowed: set[str], where: str, key: str) -> None:
    """A str.format template may name only the allowed fields (checked here, not when a run formats it)."""
    import string

    try:
        names = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as e:
        raise InputError(f"{where}: field '{key}': {text!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    bad = sorted(n for n in names if n not in allowed)
    if bad:
        known = ", ".join(f"{{{n}}}" for n in sorted(allowed))
        raise InputError(f"{where}: field '{key}': unknown placeholder {{{bad[0]}}} (known: {known})")


_FEATURE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _features(f: Fields, key: str) -> list[str]:
    names = f.str_list(key)
    for n in names:
        if not _FEATURE.match(n):
            raise InputError(f"{f.doc.where(key)}: field '{key}': {n!r} is not a feature name "
                             "(lower-case letters, digits, _ and -)")
    return names


def _resolve_kernel(name: str, raw: dict[str, Doc], kernels_dir: Path, chain: list[str]) -> Kernel:
    doc = raw[name]
    if name in chain:
        raise InputError(f"{doc.where('extends')}: kernel '{name}' extends itself via {' -> '.join(chain)}")
    f = Fields(doc, "kernel")
    f.str("name", required=True)
    extends = f.str("extends")
    parent: Kernel | None = None
    if extends:
        if extends not in raw:
            known = ", ".join(sorted(raw))
            raise InputError(f"{doc.where('extends')}: field 'extends': unknown kernel '{extends}' (known: {known})")
        parent = _resolve_kernel(extends, raw, kernels_dir, chain + [name])

    prebuilt = source = config = None
    pre = f.mapping("prebuilt")
    if pre is not None:
        pf = Fields(pre, "prebuilt")
        prebuilt = Prebuilt(
            image=pf.str("image", required=True), modules=pf.str("modules"), load=tuple(pf.str_list("load"))
        )
        pf.done()
        if prebuilt.modules is not None:
            _placeholders(prebuilt.modules, {"release"}, pre.where("modules"), "modules")
        for module in prebuilt.load:
            if module.startswith("/") or ".." in Path(module).parts:
                raise InputError(f"{pre.where('load')}: field 'load': {module!r} must be a module path inside "
                                 "the modules folder")
    src = f.mapping("source")
    if src is not None:
        kinds = [k for k in SOURCE_KINDS if k in src]
        if len(kinds) != 1:
            raise InputError(f"{src.where()}: field 'source': give exactly one of {', '.join(SOURCE_KINDS)}")
        sf = Fields(src, "source")
        location = sf.str(kinds[0], required=True)
        ref = sf.str("ref")
        sf.done()
        if ref is not None and kinds[0] != "git":
            raise InputError(f"{src.where('ref')}: field 'ref': only a git source has commits ({kinds[0]} has none)")
        if kinds[0] == "debian" and "/" not in location and not _DEBIAN_PACKAGE.fullmatch(location):
            raise InputError(f"{src.where(kinds[0])}: field 'debian': {location!r} is not a Debian package name "
                             "(or a path to a tarball)")
        if any(ch in location for ch in "\n\r\0"):
            raise InputError(f"{src.where(kinds[0])}: field '{kinds[0]}': {location!r} holds a control character")
        source = Source(kinds[0], location, ref)
    cfg = f.mapping("config")
    if cfg is not None:
        cf = Fields(cfg, "config")
        base = cf.str("base", "tinyconfig")
        fragments = cf.paths("fragments", kernels_dir / "configs")
        cf.done()
        config = ConfigRecipe(base, tuple(fragments))
    patches = f.paths("patches", kernels_dir, folders=True)
    kernel = Kernel(
        name=name,
        description=f.str("description", parent.description if parent else ""),
        path=doc.path,
        cmdline=f.str("cmdline", parent.cmdline if parent else "console=ttyS0"),
        prebuilt=prebuilt or (parent.prebuilt if parent else None),
        source=source or (parent.source if parent else None),
        config=config or (parent.config if parent else None),
        patches=(parent.patches if parent else ()) + tuple(patches),
        image=f.str("image", parent.image if parent else "arch/x86/boot/bzImage"),
        extends=extends,
        baseline=f.str("baseline", None),
        checkpatch=f.bool("checkpatch", parent.checkpatch if parent else False),
        provides=tuple(dict.fromkeys([*(parent.provides if parent else ()), *_features(f, "provides")])),
    )
    f.done()
    if kernel.prebuilt and kernel.source:
        raise InputError(f"{doc.where()}: kernel '{name}' has both 'prebuilt' and 'source'; pick one")
    if kernel.source and not kernel.config:
        raise InputError(f"{doc.where()}: kernel '{name}' is built from source but has no 'config'")
    return kernel


ACCELS = ("tcg", "kvm")


def _per_accel(doc: Doc | None, key: str):
    """(accel name, its mapping, where) for each accelerator of a per-accelerator field."""
    for accel_name, value in (doc or {}).items():
        if accel_name not in ACCELS:
            raise InputError(f"{doc.where(accel_name)}: field '{key}': {accel_name!r} is not tcg or kvm")
        if not isinstance(value, Doc):
            raise InputError(f"{doc.where(accel_name)}: field '{key}.{accel_name}': expected a mapping")
        yield accel_name, value


def _xfail(doc: Doc | None) -> dict:
    """xfail: {tcg: {prog: {exit: N, reason: "..."}}}"""
    out: dict[str, dict[str, tuple[int, str]]] = {}
    for accel_name, progs in _per_accel(doc, "xfail"):
        out[accel_name] = {}
        for prog, spec in progs.items():
            if not isinstance(spec, Doc):
                raise InputError(f"{progs.where(prog)}: field 'xfail.{accel_name}.{prog}': expected exit and reason")
            xf = Fields(spec, f"xfail.{accel_name}.{prog}")
            status = xf.int("exit", required=True, minimum=1)
            if status > 255 or status == 4:
                raise InputError(f"{spec.where('exit')}: field 'exit': {status} is not a failing exit status "
                                 "(1..255, not 4)")
            out[accel_name][prog] = (status, xf.str("reason", required=True))
            xf.done()
    return out


def _known(doc: Doc | None) -> dict:
    """known: {tcg: {status: CRASH, match: "regex", reason: "..."}}"""
    out = {}
    for accel_name, spec in _per_accel(doc, "known"):
        kf = Fields(spec, f"known.{accel_name}")
        status = kf.str("status", required=True)
        if status not in ("CRASH", "FAIL", "TIMEOUT"):
            raise InputError(f"{spec.where('status')}: field 'status': {status!r} is not CRASH, FAIL or TIMEOUT")
        match = kf.str("match", required=True)
        try:
            re.compile(match)
        except re.error as e:
            raise InputError(f"{spec.where('match')}: field 'match': not a regular expression: {e}") from None
        out[accel_name] = Known(status, match, kf.str("reason", required=True))
        kf.done()
    return out


def _load_test(path: Path, shown: Path) -> Test:
    doc = datafile.load(path, shown)
    f = Fields(doc, "test")
    folder = path.parent
    sources = f.paths("sources", folder)
    binary = f.str("binary")
    selftests = None
    sdoc = f.mapping("selftests")
    if sdoc is not None:
        sf = Fields(sdoc, "selftests")
        selftests = SelftestBuild(kernel=sf.str("kernel", required=True), dir=sf.str("dir", required=True),
                                  select=sf.str("select", "*"), make=tuple(sf.str_list("make")),
                                  exclude=tuple(sf.str_list("exclude")), program=sf.str("program", ""))
        sf.done()
        if selftests.program and not re.match(r"^[A-Za-z0-9_.-]+$", selftests.program):
            raise InputError(f"{sdoc.where('program')}: field 'program': {selftests.program!r} is not a program name")
        if selftests.dir.startswith("/") or ".." in Path(selftests.dir).parts:
            raise InputError(f"{sdoc.where('dir')}: field 'dir': must be a folder inside the kernel tree")
        for var in selftests.make:
            if not re.match(r"^[A-Z_][A-Z0-9_]*=", var):
                raise InputError(f"{sdoc.where('make')}: field 'make': {var!r} is not a NAME=value make variable")
    skip: dict[str, dict[str, str]] = {}
    skip_doc = f.mapping("skip")
    if skip_doc is not None:
        for accel_name, progs in skip_doc.items():
            if accel_name not in ("tcg", "kvm"):
                raise InputError(f"{skip_doc.where(accel_name)}: field 'skip': {accel_name!r} is not tcg or kvm")
            if not isinstance(progs, Doc) or not all(isinstance(v, str) and v.strip() for v in progs.values()):
                raise InputError(f"{skip_doc.where(accel_name)}: field 'skip.{accel_name}': expected a mapping "
                                 "of program name to the reason it is skipped")
            skip[accel_name] = dict(progs)
    xfail = _xfail(f.mapping("xfail"))
    known = _known(f.mapping("known"))
    fmt = f.str("format", "ktap")
    test = Test(
        name=_name(f),
        description=f.str("description", ""),
        path=shown,
        run=tuple(f.str_list("run", required=True)),
        sources=tuple(sources),
        cflags=tuple(f.str_list("cflags")),
        binary=folder / binary if binary else None,
        selftests=selftests,
        format=fmt,
        timeout=float(f.number("timeout", 120.0)),
        case_timeout=float(f.number("case_timeout", 60.0)),
        skip=skip,
        xfail=xfail,
        known=known,
        checks=tuple(_features(f, "checks")),
    )
    f.done()
    if fmt not in RESULT_FORMATS:
        raise InputError(f"{doc.where('format')}: field 'format': '{fmt}' is not one of {', '.join(RESULT_FORMATS)}")
    kinds = [k for k in TEST_KINDS if getattr(test, k)]
    if len(kinds) != 1:
        raise InputError(f"{doc.where()}: test '{test.name}': give one of {', '.join(map(repr, TEST_KINDS))}")
    test = dataclasses.replace(test, kind=kinds[0])
    if not test.run:
        raise InputError(f"{doc.where('run')}: field 'run': the argv list is empty")
    if "/" in test.run[0]:
        raise InputError(f"{doc.where('run')}: field 'run': argv[0] must be a payload name, not a path")
    return test


def _load_job(path: Path, shown: Path, catalog: Catalog) -> Job:
    doc = datafile.load(path, shown)
    f = Fields(doc, "job")
    name = _name(f, required=False, default=path.stem)
    description = f.str("description", "")
    picked = {}
    for key, table, what in (
        ("kernels", catalog.kernels, "kernel"),
        ("cpus", catalog.cpus, "CPU model"),
        ("tests", catalog.tests, "test"),
    ):
        names = f.str_list(key, required=True)
        if not names:
            raise InputError(f"{doc.where(key)}: field '{key}': the list is empty")
        for n in names:
            if n not in table:
                known = ", ".join(sorted(table)) or "none"
                raise InputError(f"{doc.where(key)}: field '{key}': unknown {what} '{n}' (known: {known})")
        picked[key] = tuple(dict.fromkeys(names))
    timeouts = Timeouts()
    tdoc = f.mapping("timeouts")
    if tdoc is not None:
        tf = Fields(tdoc, "timeouts")
        timeouts = Timeouts(
            build=float(tf.number("build", timeouts.build)),
            boot=float(tf.number("boot", timeouts.boot)),
            test=tf.number("test", None),
        )
        tf.done()
    job = Job(
        name=name,
        description=description,
        path=shown,
        kernels=picked["kernels"],
        cpus=picked["cpus"],
        tests=picked["tests"],
        timeouts=timeouts,
        retries=f.int("retries", 1),
        memory_mb=f.int("memory_mb", 512, minimum=64),
        smp=f.int("smp", 2, minimum=1),
        tcg_thread=f.choice("tcg_thread", TCG_THREADS, "single"),
    )
    f.done()
    return job

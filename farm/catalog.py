"""The catalog: cpumodels/, kernels/, guests/tests/ and jobs/ loaded into typed objects.

Every validation error of a data file is raised here, as an InputError naming file:line and field.
Everything after the catalog works on these objects and never reads the YAML again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import datafile
from .datafile import Doc, Fields
from .errors import InputError


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


@dataclass(frozen=True)
class SelftestBuild:
    """Programs built from a kernel entry's own source tree (e.g. tools/testing/selftests/x86)."""

    kernel: str  # the kernel entry whose pristine source tree is used
    dir: str  # folder inside the tree, built with make OUTPUT=...
    select: str = "*"  # which built files are the tests (a glob)
    make: tuple[str, ...] = ()  # extra make variables, NAME=value


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


KTAP_FORMATS = ("ktap", "exit-code")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def _name(f: Fields, required: bool = True, default: str | None = None) -> str:
    """A name becomes a folder of the run directory: letters, digits and ._+- only."""
    name = f.str("name", default, required=required)
    if not _NAME.match(name):
        raise InputError(f"{f.doc.where('name')}: field 'name': {name!r} is not a valid name "
                         "(letters, digits and . _ + - only, at most 64)")
    return name
SOURCE_KINDS = ("debian", "git", "dir")


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
            if name in raw_kernels:
                raise InputError(f"{doc.where('name')}: kernel '{name}' is defined twice")
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
        want = pattern.lower()
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


def _bool(f: Fields, key: str, default: bool) -> bool:
    value = f._get(key, False)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise f._fail(key, "true or false", value)
    return value


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
    src = f.mapping("source")
    if src is not None:
        kinds = [k for k in SOURCE_KINDS if k in src]
        if len(kinds) != 1:
            raise InputError(f"{src.where()}: field 'source': give exactly one of {', '.join(SOURCE_KINDS)}")
        sf = Fields(src, "source")
        location = sf.str(kinds[0], required=True)
        sf.done()
        source = Source(kinds[0], location)
    cfg = f.mapping("config")
    if cfg is not None:
        cf = Fields(cfg, "config")
        base = cf.str("base", "tinyconfig")
        fragments = []
        for frag in cf.str_list("fragments"):
            p = kernels_dir / "configs" / frag
            if not p.is_file():
                raise InputError(f"{cfg.where('fragments')}: field 'fragments': no such file {p}")
            fragments.append(p)
        cf.done()
        config = ConfigRecipe(base, tuple(fragments))
    patches = []
    for entry in f.str_list("patches"):
        p = kernels_dir / entry
        if not p.exists():
            raise InputError(f"{doc.where('patches')}: field 'patches': no such file or folder {p}")
        patches.append(p)
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
        checkpatch=_bool(f, "checkpatch", parent.checkpatch if parent else False),
    )
    f.done()
    if kernel.prebuilt and kernel.source:
        raise InputError(f"{doc.where()}: kernel '{name}' has both 'prebuilt' and 'source'; pick one")
    if kernel.source and not kernel.config:
        raise InputError(f"{doc.where()}: kernel '{name}' is built from source but has no 'config'")
    return kernel


def _load_test(path: Path, shown: Path) -> Test:
    doc = datafile.load(path, shown)
    f = Fields(doc, "test")
    folder = path.parent
    sources = []
    for s in f.str_list("sources"):
        p = folder / s
        if not p.is_file():
            raise InputError(f"{doc.where('sources')}: field 'sources': no such file {p}")
        sources.append(p)
    binary = f.str("binary")
    selftests = None
    sdoc = f.mapping("selftests")
    if sdoc is not None:
        sf = Fields(sdoc, "selftests")
        selftests = SelftestBuild(kernel=sf.str("kernel", required=True), dir=sf.str("dir", required=True),
                                  select=sf.str("select", "*"), make=tuple(sf.str_list("make")))
        sf.done()
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
    )
    f.done()
    if fmt not in KTAP_FORMATS:
        raise InputError(f"{doc.where('format')}: field 'format': '{fmt}' is not one of {', '.join(KTAP_FORMATS)}")
    if sum(map(bool, (test.sources, test.binary, test.selftests))) != 1:
        raise InputError(f"{doc.where()}: test '{test.name}': give one of 'sources', 'binary' or 'selftests'")
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
    )
    f.done()
    return job

"""Guest images: an initramfs of Debian's busybox-static and dropbear, plus modules and test payloads.

An image is three gzip'd cpio layers, concatenated (the kernel unpacks them in turn):
  base     busybox, dropbear and its libraries, /init, a host key made at build time, the farm's key
  modules  the .ko files a prebuilt kernel needs to reach the network (none for farm-built kernels)
  payload  the test programs, built static with the host compiler
Each layer is cached by the digest of its inputs, so an unchanged image costs a few stats to reuse.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..catalog import Test
from ..errors import InfraError, InputError
from . import cpio
from .keys import ClientKey

BUSYBOX = Path("/bin/busybox")
DROPBEAR = Path("/usr/sbin/dropbear")
DROPBEARKEY = Path("/usr/bin/dropbearkey")
PAYLOAD_DIR = "/opt/farm/tests"
READY_MARKER = "farm-init: ready"


@dataclass(frozen=True)
class GuestImage:
    initrd: Path
    host_key: str  # "ssh-ed25519 AAAA...": pinned for every guest booted from this image
    digest: str


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _shared_libs(binary: Path) -> list[Path]:
    """The libraries `binary` loads, as ldd resolves them on this host."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/") and Path(p).exists():
                libs.append(Path(p))
                break
    return libs


def _parents(path: str, seen: set[str]) -> list[cpio.Entry]:
    out = []
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            out.append(cpio.directory(d))
    return out


class ImageBuilder:
    """Builds and caches guest images under `cache/images`."""

    def __init__(self, cache: Path, guests_dir: Path, key: ClientKey):
        self.cache = cache / "images"
        self.guests_dir = guests_dir
        self.key = key
        for tool in (BUSYBOX, DROPBEAR, DROPBEARKEY):
            if not tool.exists():
                raise InfraError(f"{tool} is missing: install busybox-static and dropbear-bin")

    # --- base layer ---------------------------------------------------------------------------

    def base(self) -> tuple[Path, str, str]:
        init = self.guests_dir / "initramfs" / "init"
        libs = _shared_libs(DROPBEAR)
        inputs = [BUSYBOX, DROPBEAR, init, *libs]
        digest = _sha("base-v1", self.key.public, *(f"{p}:{file_digest(p)}" for p in inputs))
        folder = self.cache / f"base-{digest[:32]}"
        layer, pub = folder / "base.cpio.gz", folder / "host_key.pub"
        if layer.exists() and pub.exists():
            return layer, pub.read_text().strip(), digest
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once must agree on one host key
            if layer.exists() and pub.exists():
                return layer, pub.read_text().strip(), digest
            return self._build_base(folder, layer, pub, init, libs, digest)

    def _build_base(self, folder: Path, layer: Path, pub: Path, init: Path, libs: list[Path], digest: str):
        host_key_file = folder / "host_key"
        host_key_file.unlink(missing_ok=True)
        gen = subprocess.run(
            [str(DROPBEARKEY), "-t", "ed25519", "-f", str(host_key_file)], capture_output=True, text=True
        )
        pubs = [line for line in gen.stdout.splitlines() if line.startswith("ssh-")]
        if gen.returncode != 0 or not pubs:
            raise InfraError(f"dropbearkey failed: {gen.stderr.strip() or gen.stdout.strip()}")
        host_pub = " ".join(pubs[0].split()[:2])
        seen: set[str] = set()
        entries = []
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/dropbear", "etc/farm", "proc",
                  "sys", "dev", "tmp", "run", "lib", "lib/modules", "lib/modules/farm", "opt", "opt/farm",
                  PAYLOAD_DIR.strip("/"), "var", "var/log"):
            seen.add(d)
            entries.append(cpio.directory(d))
        entries += [
            cpio.chardev("dev/console", 5, 1),
            cpio.chardev("dev/null", 1, 3, 0o666),
            cpio.file("init", init.read_bytes(), 0o755),
            cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755),
            cpio.symlink("bin/sh", "busybox"),
            cpio.file("usr/sbin/dropbear", DROPBEAR.read_bytes(), 0o755),
            cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            cpio.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o600),
            cpio.file("etc/group", b"root:x:0:\ntty:x:5:\n"),
            cpio.file("etc/shells", b"/bin/sh\n"),
            cpio.file("etc/dropbear/host_key", host_key_file.read_bytes(), 0o600),
            cpio.directory("root", 0o700),
            cpio.directory("root/.ssh", 0o700),
            cpio.file("root/.ssh/authorized_keys", (self.key.public + "\n").encode(), 0o600),
        ]
        for lib in libs:
            entries += _parents(str(lib), seen)
            entries.append(cpio.file(str(lib), lib.read_bytes(), 0o755))
        _write_atomic(layer, gzip.compress(cpio.pack(entries), compresslevel=1, mtime=0))
        _write_atomic(pub, (host_pub + "\n").encode())  # last: it marks the layer complete
        host_key_file.unlink()  # the guest's secret lives only inside the image
        return layer, host_pub, digest

    # --- modules layer ------------------------------------------------------------------------

    def modules(self, folder: Path, load: tuple[str, ...]) -> tuple[Path, str] | None:
        if not load:
            return None
        files = []
        for name in load:
            ko = folder / f"{name}.ko"
            if not ko.is_file():
                raise InputError(f"kernel module {ko} not found (from the kernel's 'prebuilt.load' list)")
            files.append(ko)
        digest = _sha("modules-v1", *(f"{p}:{file_digest(p)}" for p in files))
        layer = self.cache / f"modules-{digest[:32]}.cpio.gz"
        if not layer.exists():
            entries = [cpio.directory("lib"), cpio.directory("lib/modules"), cpio.directory("lib/modules/farm")]
            entries += [cpio.file(f"lib/modules/farm/{p.name}", p.read_bytes()) for p in files]
            order = "".join(f"{p.stem}\n" for p in files).encode()
            entries += [cpio.directory("etc"), cpio.directory("etc/farm"), cpio.file("etc/farm/modules", order)]
            _write_atomic(layer, gzip.compress(cpio.pack(entries), compresslevel=1, mtime=0))
        return layer, digest

    # --- payload layer ------------------------------------------------------------------------

    def payload(self, tests: list[Test]) -> tuple[Path, str]:
        binaries = {test.run[0]: self.build_test(test) for test in tests}
        digest = _sha("payload-v1", *(f"{n}:{file_digest(p)}" for n, p in sorted(binaries.items())))
        layer = self.cache / f"payload-{digest[:32]}.cpio.gz"
        if not layer.exists():
            entries = []
            seen: set[str] = set()
            for name, path in sorted(binaries.items()):
                dest = f"{PAYLOAD_DIR.strip('/')}/{name}"
                entries += _parents(dest, seen)
                entries.append(cpio.file(dest, path.read_bytes(), 0o755))
            _write_atomic(layer, gzip.compress(cpio.pack(entries), compresslevel=1, mtime=0))
        return layer, digest

    def build_test(self, test: Test) -> Path:
        """A test's static binary: prebuilt, or compiled from its sources (cached by content)."""
        if test.binary:
            if not test.binary.is_file():
                raise InputError(f"{test.path}: field 'binary': no such file {test.binary}")
            return test.binary
        cc = os.environ.get("CC", "gcc")
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
        digest = _sha("test-v1", cc, version, *test.cflags, *(f"{p.name}:{file_digest(p)}" for p in test.sources))
        out = self.cache / "tests" / f"{test.name}-{digest[:32]}"
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        argv = [cc, *test.cflags, "-o", str(tmp), *map(str, test.sources)]
        if "-static" not in test.cflags:
            argv.insert(1, "-static")
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise InputError(f"{test.path}: building test '{test.name}' failed: {result.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
        return out

    # --- whole image --------------------------------------------------------------------------

    def image(self, tests: list[Test], modules: tuple[Path, tuple[str, ...]] | None = None) -> GuestImage:
        base, host_key, base_digest = self.base()
        layers = [(base, base_digest)]
        if modules:
            mod = self.modules(*modules)
            if mod:
                layers.append(mod)
        layers.append(self.payload(tests))
        digest = _sha("image-v1", *(d for _, d in layers))
        initrd = self.cache / f"initrd-{digest[:32]}.cpio.gz"
        if not initrd.exists():
            tmp = initrd.with_name(f".{initrd.name}.{os.getpid()}")
            with open(tmp, "wb") as out:
                for path, _ in layers:
                    with open(path, "rb") as f:
                        shutil.copyfileobj(f, out)
            os.replace(tmp, initrd)
        return GuestImage(initrd, host_key, digest)

"""Before any cell runs: each kernel found or built once, its guest image made, and KVM confirmed by a boot.

    prepared = prepare.kernels(plan, progress, stopping)    # kernel name -> PreparedKernel
    prepare.confirm_kvm(plan, prepared, progress)          # KVM that does not boot a guest becomes TCG
"""

from __future__ import annotations

import concurrent.futures
import glob
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from .catalog import Kernel, Test
from .errors import FarmError
from .guest.image import GuestImage, ImageBuilder
from .paths import cache_root
from .plan import Plan
from .results.run import BuildOutcome, BuildRecord, Checkpatch, Status, checkpatch_summary
from .vm.accel import Accel
from .vm.base import MachineSpec
from .vm.qemu import QemuPool


@dataclass
class PreparedKernel:
    image: Path | None
    guest: GuestImage | None
    build: BuildRecord
    error: str = ""  # why this kernel cannot be booted (its cells end as ERROR at stage build)

    @property
    def ready(self) -> bool:
        return not self.error


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def prepare_kernel(kernel: Kernel, builder: ImageBuilder, tests: list[Test], note=lambda text: None,
                   on_build=None) -> PreparedKernel:
    """The kernel image to boot (found, or built once) and the guest image that goes with it."""
    modules = None
    if kernel.prebuilt:
        images = sorted(glob.glob(kernel.prebuilt.image), key=_natural)
        if not images:
            why = f"{kernel.path}: prebuilt image '{kernel.prebuilt.image}' matches no file"
            return PreparedKernel(None, None, BuildRecord(BuildOutcome.ERROR, error=why), why)
        image = Path(images[-1])
        release = image.name.removeprefix("vmlinuz-")
        if kernel.prebuilt.modules:
            modules = (Path(kernel.prebuilt.modules.format(release=release)), kernel.prebuilt.load)
        build = BuildRecord(BuildOutcome.PREBUILT, image=str(image), release=release,
                            metadata={"prebuilt": str(image), "release": release})
    else:
        from .kernel.build import BuildError, build_kernel  # heavy; only when something is built

        note(f"kernel {kernel.name}: building")
        # checkpatch beside the build, not after it: seconds per edited patch off the edit loop
        checked = _checkpatch_in_background(kernel) if kernel.checkpatch else None
        try:
            built = build_kernel(kernel, log=lambda line: note(f"kernel {kernel.name}: {line}"), progress=on_build)
        except BuildError as e:
            outcome = BuildOutcome.FAILED if e.kernel_fault else BuildOutcome.ERROR
            build = BuildRecord(outcome, error=str(e), error_lines=list(e.lines),
                                log=str(e.log_path or ""))
            return PreparedKernel(None, None, build, str(e))
        image = built.image
        build = BuildRecord.from_metadata(built.metadata, BuildOutcome.CACHED if built.cache_hit
                                          else BuildOutcome.BUILT, log=str(built.log_path))
        build.image = str(image)
        if checked is not None:
            build.checkpatch = [Checkpatch(**r) for r in checked()]
            note(f"kernel {kernel.name}: {checkpatch_summary(build.checkpatch)}")
    try:
        guest = builder.image(tests, modules)
    except FarmError as e:
        return PreparedKernel(image, None, build, f"guest image: {e}")
    return PreparedKernel(image, guest, build)


def _checkpatch_in_background(kernel: Kernel):
    """scripts/checkpatch.pl on the kernel's series, started now; the returned call waits for its results."""
    from .kernel.checkpatch import check_series

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"checkpatch-{kernel.name}")
    future = pool.submit(check_series, kernel)
    pool.shutdown(wait=False)
    return future.result


def kernels(plan: Plan, progress, stopping: threading.Event) -> dict[str, PreparedKernel]:
    """Every kernel that still has cells to run, prepared once, in the job's order; each build recorded."""
    builder = ImageBuilder(cache_root(), plan.catalog.root / "guests", plan.key, plan.catalog.kernels)
    tests = [plan.catalog.tests[t] for t in plan.tests]
    todo = {c.kernel for c in plan.pending()}
    prepared: dict[str, PreparedKernel] = {}
    names = [n for n in plan.kernels if n in todo]
    for i, name in enumerate(names):
        if stopping.is_set():
            continue
        if len(names) > 1:  # which kernel is being prepared and what is left after it
            left = ", ".join(names[i + 1:]) or "none"
            progress.note(f"kernel {name}: {i + 1} of {len(names)} (left after it: {left})")
        prepared[name] = prepare_kernel(plan.catalog.kernels[name], builder, tests, progress.note,
                                        getattr(progress, "build", None))
        plan.record.kernels[name].build = prepared[name].build
    return prepared


def confirm_kvm(plan: Plan, prepared: dict[str, PreparedKernel], progress) -> None:
    """A KVM that passed the static checks must also boot a guest to its marker, or TCG it is."""
    if plan.accel.name != "kvm" or not plan.accel.probe_boot:
        return
    ready = next((name for name, p in prepared.items() if p.ready), None)
    if ready is None:
        return
    p = prepared[ready]
    first = next(c for c in plan.record.cells if c.kernel == ready)
    spec = MachineSpec(kernel=p.image, initrd=p.guest.initrd, cmdline=plan.catalog.kernels[ready].cmdline,
                       cpu=plan.catalog.cpus[first.cpu].qemu, accel="kvm", host_key=p.guest.host_key, smp=1,
                       name="accel-probe")
    local = next(pool for pool in plan.pools if isinstance(pool, QemuPool))
    try:
        with local.create(spec, plan.out / "accel-probe", boot_timeout=30):
            pass
    except FarmError as e:
        plan.accel = Accel("tcg", f"KVM probe boot failed, using TCG: {str(e).splitlines()[0]}")
        progress.note(f"warning: {plan.accel.reason}")
        local.accel = "tcg"
        plan.record.host.accel, plan.record.host.accel_reason = "tcg", plan.accel.reason
        for c in plan.record.cells:
            if c.status is Status.PENDING:
                c.accel = "tcg"

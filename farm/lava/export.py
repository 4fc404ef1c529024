"""`farm lava-jobs JOB`: a job's cells as LAVA job definitions, written without submitting them, for labs
that submit through their own tooling. The kernels and guest images are prepared as for a run (built once,
cached) and copied next to the definitions, named by digest, so the folder can be published as it is.

    OUT/artifacts/<sha256:16>-<file>          kernel images and initramfs, as the definitions name them
    OUT/jobs/<kernel>/<cpu>/<test>.yaml       one definition per cell
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..catalog import Catalog, Job
from ..errors import InfraError, InputError
from ..guest.image import PAYLOAD_DIR, ImageBuilder, file_digest
from ..guest.keys import client_key
from ..paths import cache_root
from ..prepare import prepare_kernel
from . import jobdef


def test_argv(test, kernel, attempt: int, accel: str) -> tuple[str, ...]:
    """The test's argv in the guest, as the executor runs it (farm/executor.py)."""
    return ("env", f"FARM_ATTEMPT={attempt}", f"FARM_ACCEL={accel}", f"FARM_PROVIDES={','.join(kernel.provides)}",
            f"{PAYLOAD_DIR}/{test.run[0]}", *test.run[1:])


def _publish(src: Path, folder: Path, name: str) -> tuple[str, str]:
    digest = file_digest(src)
    dest = folder / f"{digest[:16]}-{name}"
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.rename(dest)
    return dest.name, digest


def write_jobs(catalog: Catalog, job: Job, kernels: list[str], cpus: list[str], tests: list[str], out: Path,
               artifacts_url: str | None = None, accel: str = "tcg", note=print) -> list[Path]:
    if artifacts_url is not None and not artifacts_url.startswith(("http://", "https://", "file://")):
        raise InputError(f"--artifacts-url {artifacts_url}: not an http://, https:// or file:// URL")
    key = client_key(cache_root() / "keys")
    key.load()
    builder = ImageBuilder(cache_root(), catalog.root / "guests", key, catalog.kernels)
    test_objs = [catalog.tests[t] for t in tests]
    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    written = []
    for k in kernels:
        prepared = prepare_kernel(catalog.kernels[k], builder, test_objs, note)
        if not prepared.ready:
            raise InfraError(f"kernel {k}: {prepared.error}")
        files = {}
        for label, path, name in (("kernel", prepared.image, prepared.image.name),
                                  ("initrd", prepared.guest.initrd, "initrd.cpio.gz")):
            published, digest = _publish(path, artifacts, name)
            url = (f"{artifacts_url.rstrip('/')}/{published}" if artifacts_url
                   else jobdef.file_url(artifacts / published))
            files[label] = (url, digest)
        for c in cpus:
            for t in tests:
                test = catalog.tests[t]
                cell = jobdef.LavaCell(
                    name=f"{k}/{c}/{t}", kernel_url=files["kernel"][0], initrd_url=files["initrd"][0],
                    kernel_sha256=files["kernel"][1], initrd_sha256=files["initrd"][1],
                    cmdline=catalog.kernels[k].cmdline, cpu=catalog.cpus[c].qemu, accel=accel,
                    argv=test_argv(test, catalog.kernels[k], 1, accel), boot_timeout=job.timeouts.boot,
                    test_timeout=job.timeouts.test or test.timeout, memory_mb=job.memory_mb, smp=job.smp,
                    tcg_thread=job.tcg_thread,
                    metadata={"cell": f"{k}/{c}/{t}", "job": job.name, "cpu": catalog.cpus[c].qemu, "accel": accel})
                path = out / "jobs" / k / c / f"{t}.yaml"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(jobdef.to_yaml(jobdef.definition(cell)))
                written.append(path)
    return written

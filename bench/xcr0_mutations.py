#!/usr/bin/env python3
"""Is every hook of the XCR0 series load-bearing? Each mutation removes one hook (one call, one mask, one rule,
the init-on-switch-off, the inherit-on-clone, the reset-on-exec) as an extra patch on top of the series, in a
copy of the data folders (FARM_ROOT), builds that kernel, runs the xcr0 tests on the given models and prints a
kill table: which case (or crash) on which model caught it, or that nothing did.

    .venv/bin/python bench/xcr0_mutations.py --cpu Skylake-Server            # every mutation, one model
    .venv/bin/python bench/xcr0_mutations.py --cpu Broadwell --only switch_fpu_finish,epilog_mask
    .venv/bin/python bench/xcr0_mutations.py --list

Slow: one kernel build (incremental: the copy's work tree is reused from one mutation to the next; its first
build is a full one from ccache) and one boot per mutation and model. --in-place puts the mutation into the
checkout's own series instead of a copy (restored afterwards), so even the first build is incremental on the
checkout's work tree. Results are appended to --record (JSON lines) as they come, so an interrupted run keeps
what it finished; --table prints the table of a record without running anything.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SERIES = REPO / "kernels" / "patches" / "xcr0"
KERNEL = "linux-6.1-xcr0"
MUTATION_PATCH = "0099-mutation.patch"
TESTS = ("xcr0", "xcr0-ia32")
STABLE = Path(tempfile.gettempdir()) / "xcr0-mutations-root"  # one path, so the kernel work tree is reused

# name: (file, text in the patched tree, replacement, what the hook is for)
MUTATIONS: dict[str, tuple[str, str, str, str]] = {
    "os_xsave": ("arch/x86/kernel/fpu/xstate.h",
                 "\txfd_validate_state(fpstate, mask, false);\n\n\txcr0_load_kernel();\n",
                 "\txfd_validate_state(fpstate, mask, false);\n\n", "kernel XSAVE into a task's buffer"),
    "os_xrstor": ("arch/x86/kernel/fpu/xstate.h",
                  "\txfd_validate_state(fpstate, mask, true);\n\txcr0_load_kernel();\n",
                  "\txfd_validate_state(fpstate, mask, true);\n", "kernel XRSTOR from a buffer"),
    "os_xrstor_supervisor": ("arch/x86/kernel/fpu/xstate.h",
                             "\tu32 hmask = mask >> 32;\n\n\txcr0_load_kernel();\n",
                             "\tu32 hmask = mask >> 32;\n\n", "supervisor state restore"),
    "xsave_to_user_sigframe": ("arch/x86/kernel/fpu/xstate.h",
                               "\t/* The frame has the kernel's format, whatever current's XCR0 is. */\n"
                               "\txcr0_load_kernel();\n", "", "signal frame XSAVE"),
    "xrstor_from_user_sigframe": ("arch/x86/kernel/fpu/xstate.h",
                                  "\txfd_validate_state(current->thread.fpu.fpstate, mask, true);\n"
                                  "\txcr0_load_kernel();\n",
                                  "\txfd_validate_state(current->thread.fpu.fpstate, mask, true);\n",
                                  "sigreturn XRSTOR"),
    "os_xrstor_safe": ("arch/x86/kernel/fpu/xstate.h",
                       "\txfd_update_state(fpstate);\n\txcr0_load_kernel();\n",
                       "\txfd_update_state(fpstate);\n", "XRSTOR with fault fixup (ia32 sigreturn)"),
    "kernel_fpu_begin_mask": ("arch/x86/kernel/fpu/core.c",
                              "\txcr0_debug_check(current->flags & PF_KTHREAD);\n\txcr0_load_kernel();\n",
                              "\txcr0_debug_check(current->flags & PF_KTHREAD);\n", "kernel FPU use"),
    "kvm_fpstate_swap": ("arch/x86/kernel/fpu/core.c",
                         "\t */\n\txcr0_load_kernel();\n\tif (!cur_fps->is_confidential",
                         "\t */\n\tif (!cur_fps->is_confidential", "KVM guest fpstate swap"),
    "switch_fpu_finish": ("arch/x86/include/asm/fpu/sched.h",
                          "\t */\n\txcr0_load_kernel();\n}", "\t */\n}", "every context switch (bug 1)"),
    "exit_to_user": ("arch/x86/include/asm/entry-common.h",
                     "\txcr0_load_user();\n", "", "the task's value on the way to user space"),
    "epilog_mask": ("arch/x86/kernel/fpu/signal.c",
                    "\txfeatures &= current->thread.fpu.user_xcr0;\n", "", "frame XSTATE_BV mask (bug 2)"),
    "sigreturn_mask": ("arch/x86/kernel/fpu/signal.c",
                       "\t\tuser_xfeatures = fx_sw_user.xfeatures & fpu->user_xcr0;\n",
                       "\t\tuser_xfeatures = fx_sw_user.xfeatures;\n", "sigreturn keeps off components init"),
    "pkru_save": ("arch/x86/kernel/fpu/signal.c",
                  "\t\tsw_bytes.padding[0] = read_pkru();\n", "\t\tsw_bytes.padding[0] = 0;\n",
                  "PKRU value into the frame's software word"),
    "pkru_restore": ("arch/x86/kernel/fpu/signal.c",
                     "\t\twrite_pkru(pkru);\n", "\t\t;\n", "PKRU back with WRPKRU on sigreturn"),
    "rule_unsupported": ("arch/x86/kernel/fpu/xstate.c",
                         "\tif (xcr0 & ~kernel_xcr0)\n\t\treturn -EOPNOTSUPP;\n", "", "only enabled user bits"),
    "rule_sse": ("arch/x86/kernel/fpu/xstate.c",
                 "\tif (!(xcr0 & XFEATURE_MASK_SSE))\n\t\treturn false;\n\treturn xcr0_architecturally_valid",
                 "\treturn xcr0_architecturally_valid", "SSE required (policy)"),
    "rule_architectural": ("arch/x86/kernel/fpu/xstate.c",
                           "\treturn xcr0_architecturally_valid(xcr0);\n", "\treturn true;\n",
                           "XSETBV's rules (x87, AVX needs SSE, MPX/AVX-512/AMX groups)"),
    "init_on_switch_off": ("arch/x86/kernel/fpu/xstate.c",
                           "\tif (off) {\n\t\tif (!test_thread_flag", "\tif (0 && off) {\n\t\tif (!test_thread_flag",
                           "switched-off components to init state"),
    "inherit_on_clone": ("arch/x86/kernel/fpu/core.c",
                         "\tdst_fpu->user_xcr0 = src_fpu->user_xcr0;\n",
                         "\tdst_fpu->user_xcr0 = fpu_user_cfg.max_features;\n", "fork/clone inherit"),
    "reset_on_exec": ("arch/x86/kernel/fpu/core.c",
                      "\tfpu->user_xcr0 = fpu_user_cfg.max_features;\n",
                      "\tif (!fpu->user_xcr0)\n\t\tfpu->user_xcr0 = fpu_user_cfg.max_features;\n", "execve reset"),
    "cache_at_cpu_init": ("arch/x86/kernel/fpu/xstate.c",
                          "\txsetbv(XCR_XFEATURE_ENABLED_MASK, fpu_user_cfg.max_features);\n"
                          "\t__this_cpu_write(xcr0_state, fpu_user_cfg.max_features);\n\n\t/*\n\t * MSR_IA32_XSS",
                          "\txsetbv(XCR_XFEATURE_ENABLED_MASK, fpu_user_cfg.max_features);\n\n\t/*\n"
                          "\t * MSR_IA32_XSS", "per-CPU cache at CPU bring-up"),
    "kvm_host_xcr0": ("arch/x86/kvm/x86.c", "\t\thost_xcr0 = fpu_kernel_xcr0();\n",
                      "\t\thost_xcr0 = xgetbv(XCR_XFEATURE_ENABLED_MASK);\n", "KVM's host XCR0"),
    "sev_es_host_xcr0": ("arch/x86/kvm/svm/sev.c", "\thostsa->xcr0 = fpu_kernel_xcr0();\n",
                         "\thostsa->xcr0 = xgetbv(XCR_XFEATURE_ENABLED_MASK);\n", "SEV-ES host save area"),
}

# Why a survivor cannot be seen from this guest (TCG, QEMU 7.2); filled in from the analysis in the report.
NOT_OBSERVABLE = {
    "kernel_fpu_begin_mask": "its own load matters only when TIF_NEED_FPU_LOAD is set while the task's value is "
                             "live (execve after fpu_flush_thread(), the ia32 sigreturn copy) and kernel FPU code "
                             "runs in that window (an interrupt's softirq crypto); otherwise the os_xsave() inside "
                             "loads the kernel's value first. User space cannot open that window on purpose",
    "os_xrstor_supervisor": "runs only with supervisor xstate (XSAVES: PASID, CET, arch LBR), which TCG lacks",
    "kvm_fpstate_swap": "no KVM inside a TCG guest: the hook is compiled (KVM=y) but never runs",
    "kvm_host_xcr0": "KVM reads host_xcr0 at module init, before any task can have an override",
    "sev_es_host_xcr0": "needs an AMD SEV-ES host",
}


def patched_file(pristine: Path, rel: str) -> str:
    """The file as the series leaves it: the series' hunks for it, applied to a copy of the pristine file."""
    from farm.kernel import patches as kpatches

    work = Path(tempfile.mkdtemp(prefix="xcr0-mut-"))
    try:
        (work / rel).parent.mkdir(parents=True)
        shutil.copy2(pristine / rel, work / rel)
        for p in kpatches.expand((SERIES,)):
            if p.path.name == MUTATION_PATCH:  # --in-place: the previous mutation is still listed
                continue
            subprocess.run(["git", "apply", f"-p{p.strip}", f"--include={rel}", str(p.path)], cwd=work, check=True,
                           env=dict(os.environ, GIT_CEILING_DIRECTORIES=str(work.parent)))
        return (work / rel).read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mutation_patch(pristine: Path, name: str) -> str:
    rel, old, new, _ = MUTATIONS[name]
    text = patched_file(pristine, rel)
    if text.count(old) != 1:
        sys.exit(f"mutation {name}: the text to remove occurs {text.count(old)} times in {rel}")
    mutated = text.replace(old, new)
    diff = difflib.unified_diff(text.splitlines(True), mutated.splitlines(True), f"a/{rel}", f"b/{rel}")
    return (f"From: mutation <farm@example.org>\nSubject: [PATCH] mutation: {name}\n\n"
            f"Remove one hook of the XCR0 series ({name}).\n\n---\n" + "".join(diff))


def prepare_root() -> Path:
    root = STABLE
    for d in ("cpumodels", "kernels", "guests", "jobs"):
        shutil.rmtree(root / d, ignore_errors=True)
        shutil.copytree(REPO / d, root / d, symlinks=True)
    return root


def run(root: Path, cpus: list[str], out: Path) -> dict:
    env = dict(os.environ, FARM_ROOT=str(root), CI="true")
    argv = [sys.executable, "-m", "farm.cli", "run", "--job", "xcr0", "--kernel", KERNEL, "--out", str(out)]
    for c in cpus:
        argv += ["--cpu", c]
    for t in TESTS:
        argv += ["--test", t]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if not (out / "run.json").is_file():
        return {"error": f"farm run exited {proc.returncode}: {proc.stderr[-500:]}"}
    run = json.loads((out / "run.json").read_text())
    build = run["kernels"][KERNEL].get("build") or {}
    killed = []
    for c in run["cells"]:
        if c["status"] in ("FAIL", "CRASH", "TIMEOUT", "FLAKY"):
            cases = [k["name"] for k in c.get("cases", []) if k["status"] == "FAIL"]
            killed.append({"cpu": c["cpu"], "test": c["test"], "status": c["status"],
                           "cases": cases, "reason": (c.get("reason") or "")[:160]})
    return {"killed": killed, "build": build.get("outcome"), "build_error": build.get("error", "")[:300],
            "statuses": {c["id"]: c["status"] for c in run["cells"]}}


def table(records: list[dict]) -> str:
    lines = [f"{'mutation':<26} {'result':<9} by", f"{'-' * 26} {'-' * 9} {'-' * 40}"]
    for r in records:
        name = r["mutation"]
        if r.get("error") or str(r.get("build")).upper() not in ("BUILT", "CACHED"):
            lines.append(f"{name:<26} {'ERROR':<9} {r.get('error') or r.get('build_error') or r.get('build')}")
        elif r["killed"]:
            by = "; ".join(f"{k['cpu']} {k['test']} {k['status']}"
                           + (f" ({', '.join(k['cases'][:4])})" if k["cases"] else f" ({k['reason'][:70]})")
                           for k in r["killed"])
            lines.append(f"{name:<26} {'killed':<9} {by}")
        else:
            why = NOT_OBSERVABLE.get(name, "no case failed on " + ", ".join(r["cpus"]))
            lines.append(f"{name:<26} {'SURVIVED':<9} {why}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="append", help="CPU model(s) to run on (default Skylake-Server)")
    ap.add_argument("--only", help="comma-separated mutation names")
    ap.add_argument("--record", type=Path, default=Path("xcr0-mutations.jsonl"))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the table of --record and exit")
    ap.add_argument("--in-place", action="store_true", help="mutate the checkout's series (restored afterwards)")
    args = ap.parse_args()
    # a kill (SIGTERM) still runs the finally below, which puts the checkout's series back
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.list:
        for name, (rel, _, _, why) in MUTATIONS.items():
            print(f"{name:<26} {rel:<38} {why}")
        return 0
    if args.table:
        print(table([json.loads(ln) for ln in args.record.read_text().splitlines() if ln.strip()]))
        return 0
    from farm.catalog import Catalog
    from farm.kernel import source as ksource
    from farm.kernel.run import Runner

    cpus = args.cpu or ["Skylake-Server"]
    names = args.only.split(",") if args.only else list(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    kernel = Catalog(REPO).kernels[KERNEL]
    pristine = ksource.pristine_tree(ksource.resolve(kernel.source), Runner(), lambda text: None)
    root = REPO if args.in_place else prepare_root()
    series_dir = root / "kernels" / "patches" / "xcr0"
    series = (SERIES / "series").read_text()
    runs = Path(tempfile.mkdtemp(prefix="xcr0-mutation-runs-"))
    records = []
    try:
        for name in names:
            (series_dir / MUTATION_PATCH).write_text(mutation_patch(pristine, name))
            (series_dir / "series").write_text(series + MUTATION_PATCH + "\n")
            print(f"{name}: building and running on {', '.join(cpus)}", flush=True)
            rec = {"mutation": name, "cpus": cpus, **run(root, cpus, runs / name)}
            records.append(rec)
            with open(args.record, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(table([rec]).splitlines()[-1], flush=True)
    finally:
        (series_dir / "series").write_text(series)
        (series_dir / MUTATION_PATCH).unlink(missing_ok=True)
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

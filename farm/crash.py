"""The crash catalogue: which console lines start a kernel crash report, what kind it is, and its title.

Titles follow syzkaller's pkg/report (and NIPA's crash.py): the class of the report and the function it
happened "in", the first frame that is not part of the reporting machinery ("KASAN: use-after-free Read in
lkdtm_READ_AFTER_FREE", "WARNING in xstate_init", "INFO: task hung in lkdtm_HUNG_TASK"). A fingerprint is the
title plus the function names of the top frames (never addresses, offsets, CPUs or PIDs), so the same crash
has the same fingerprint on every CPU model, in every run and whether or not its frames were decoded.

A report is open from its header line until its stack trace ends (or MAX_REPORT_LINES later); lines that
continue it (the "Oops:" after "BUG: kernel NULL pointer dereference", the WARNING a refcount or list
corruption message prints, the "invalid opcode:" of a BUG()) belong to it and start nothing new.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .results.run import Crash

MAX_REPORT_LINES = 150  # a report's frames are within this many lines of its header
MAX_FRAMES = 12  # frames kept per crash
FINGERPRINT_FRAMES = 3  # frames, after the title's own, that make the fingerprint


@dataclass(frozen=True)
class Pattern:
    kind: str
    regex: re.Pattern
    title: str  # str.format with the regex's groups and {func}: the function the report is "in"
    # only as a continuation of an open report of these kinds (the header that follows another's message)
    continues: frozenset[str] = frozenset()
    # a lock report: it is "in" the function that took the lock ("at: func+0x.."), as lockdep names it
    by_lock: bool = False


def _p(kind: str, regex: str, title: str, continues: tuple[str, ...] = (), by_lock: bool = False) -> Pattern:
    return Pattern(kind, re.compile(regex), title, frozenset(continues), by_lock)


_ANY = ("bug", "exception", "warning", "kasan", "kfence", "ubsan", "lockdep", "refcount", "list-corruption",
        "atomic-sleep", "hung-task", "soft-lockup", "rcu-stall", "kmemleak")

# First match wins: the specific before the general ("BUG: KASAN:" before "BUG:").
CATALOGUE: list[Pattern] = [
    _p("panic", r"Kernel panic - not syncing: ?(?P<msg>.*)", "Kernel panic - not syncing: {msg}"),
    # memory safety
    _p("kasan", r"BUG: KASAN: (?P<what>[\w-]+) in (?P<func>[\w.]+)", "KASAN: {what} {access} in {func}"),
    _p("kasan", r"BUG: KASAN: (?P<what>[\w-]+)(?: on address)?", "KASAN: {what} in {func}"),
    _p("kfence", r"BUG: KFENCE: (?P<what>[\w -]+?) in (?P<func>[\w.]+)", "KFENCE: {what} in {func}"),
    _p("ubsan", r"UBSAN: (?P<what>[\w-]+) in ", "UBSAN: {what} in {func}"),
    _p("list-corruption", r"(?P<op>list_(?:add|del)) corruption", "BUG: corrupted list in {func}"),
    _p("refcount", r"refcount_t: (?P<what>[^;.]+)", "refcount bug in {func}"),
    # the scan's count line, then one report per object (the first continues the count line's report)
    _p("kmemleak", r"unreferenced object 0x[0-9a-f]+ \(size \d+\):", "memory leak in {func}", ("kmemleak",)),
    _p("kmemleak", r"kmemleak: \d+ new suspected memory leaks", "memory leak in {func}"),
    # lockdep, RCU and atomic context
    _p("lockdep", r"WARNING: possible circular locking dependency detected", "possible deadlock in {func}",
       by_lock=True),
    _p("lockdep", r"WARNING: possible recursive locking detected", "possible deadlock in {func}", by_lock=True),
    # in the function whose rcu_dereference() it was (the stack), not where the locks it lists were taken
    _p("lockdep", r"WARNING: suspicious RCU usage", "suspicious RCU usage in {func}"),
    _p("lockdep", r"WARNING: (?P<what>lock held when returning to user space|inconsistent lock state|"
       r"bad unlock balance detected|held lock freed|lock held at task exit time)!?",
       "WARNING: {what} in {func}", by_lock=True),
    _p("atomic-sleep", r"BUG: (?P<what>sleeping function called from invalid context|scheduling while atomic)",
       "BUG: {what} in {func}"),
    # lockups and stalls
    _p("hung-task", r"INFO: task \S+ blocked for more than \d+ seconds", "INFO: task hung in {func}"),
    _p("soft-lockup", r"BUG: soft lockup - CPU#\d+ stuck for", "BUG: soft lockup in {func}"),
    _p("rcu-stall", r"INFO: rcu_\w+ (?:self-)?detected stalls?", "INFO: rcu detected stall in {func}"),
    # BUG(), exceptions and WARN()
    _p("bug", r"kernel BUG at (?P<where>\S+?)!?$", "kernel BUG in {func}"),
    _p("exception", r"BUG: kernel NULL pointer dereference", "BUG: kernel NULL pointer dereference in {func}"),
    _p("exception", r"BUG: unable to handle page fault", "BUG: unable to handle page fault in {func}"),
    _p("exception", r"general protection fault", "general protection fault in {func}", ("bug", "exception")),
    _p("exception", r"invalid opcode: ", "invalid opcode in {func}", ("bug",)),
    _p("exception", r"\bOops: ", "Oops in {func}", ("exception",)),
    # WARN() prints "WARNING: CPU: 0 PID: 1 at file:line func+0x1/0x2"; "RETBleed: WARNING: ..." is a notice.
    _p("warning", r"\bWARNING: CPU: \d+ PID: \d+ at \S+ (?P<func>[\w.]+)\+", "WARNING in {func}",
       ("refcount", "list-corruption")),
    _p("warning", r"\bWARNING: (?:CPU: \d+ PID: \d+|at ).*", "WARNING in {func}", ("refcount", "list-corruption")),
    _p("bug", r"\bBUG: (?P<what>[^,:]+)", "BUG: {what} in {func}"),
    _p("calltrace", r"Call Trace:", "call trace in {func}"),
]

# A stack frame: " func+0x1a/0x30", " ? func+0x1a/0x30" (unreliable), "[<ffffffff8123>] func+0x..." (kmemleak),
# "RIP: 0010:func+0x1a/0x30", and decoded by decode_stacktrace.sh: " func (drivers/x/y.c:12)".
_FRAME = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?P<unreliable>\? )?(?P<func>[A-Za-z_][\w.]*)"
                    r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?| \((?P<src>[^)]*:\d+)[^)]*\))")
_RIP = re.compile(r"^RIP: [0-9a-f]{4}:(?P<func>[A-Za-z_][\w.]*)(?:\+0x|\s\()")
_MARKERS = re.compile(r"^\s*</?(?:TASK|IRQ|NMI|SOFTIRQ|EOE)>\s*$")
_ANY_FUNC = re.compile(r"\b(?:at: )?(?P<func>[A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
_REGS = re.compile(r"^(?:RIP|Code|RSP|R[A-Z0-9]{2}|FS|CS|CR2|DR\d|PKRU):")
_ACCESS = re.compile(r"^(?P<access>Read|Write) of size \d+")

# The reporting machinery: never what a report is "in" (syzkaller's skip lists, shortened).
_SKIP_PREFIXES = (
    "dump_stack", "show_stack", "__dump_stack", "print_", "printk", "vprintk", "_printk", "panic_", "__warn",
    "warn_", "report_bug", "handle_bug", "do_error_trap", "do_trap", "exc_", "asm_exc_", "kasan_", "__kasan_",
    "kfence_", "__kfence_", "ubsan_", "__ubsan_", "refcount_warn_saturate", "__refcount_", "__list_",
    "lockdep_", "__lock_acquire", "lock_acquire", "lock_release", "__might_", "___might_", "__schedule",
    "schedule", "io_schedule", "rcu_", "watchdog_", "__bug", "debug_", "kmem_cache_alloc", "kmalloc_",
    "__kmalloc", "__kmem_cache_alloc", "slab_", "__slab", "___slab", "__do_kmalloc", "do_syscall_",
    "entry_SYSCALL", "ret_from_fork",
    "page_fault_oops", "kernelmode_fixup_or_oops", "__bad_area", "bad_area", "do_user_addr_fault",
    "do_kern_addr_fault", "oops_", "__die", "__sysvec", "sysvec_", "asm_sysvec", "hrtimer_", "__hrtimer",
    "tick_", "update_process_times", "irq_exit", "__irq_exit", "do_softirq", "__do_softirq", "__raw_spin",
    "_raw_spin", "do_raw_spin", "queued_spin", "native_queued", "mark_lock", "validate_chain",
    "check_noncircular", "check_prev_add", "check_irq_usage", "trace_", "__trace", "stack_trace_",
    "arch_stack_walk", "save_stack", "set_track", "nmi_", "lapic_", "native_safe_halt", "kmemleak_",
    "__mutex_", "mutex_lock", "mutex_unlock", "down_read", "down_write", "__down", "rwsem_", "up_read", "up_write",
)
_SKIP = {"panic", "die", "kthread", "kmalloc", "kfree", "bug", "warn", "secondary_startup_64_no_verify"}


def skipped(func: str) -> bool:
    return func in _SKIP or func.startswith(_SKIP_PREFIXES)


def frame_of(line: str) -> tuple[str, str, bool] | None:
    """(function, the frame as shown, unreliable) of a stack frame line, or None."""
    m = _FRAME.match(line)
    if not m:
        return None
    shown = line.strip()
    if shown.startswith("[<"):
        shown = shown.split("] ", 1)[-1]
    return m.group("func"), shown.removeprefix("? "), bool(m.group("unreliable"))


@dataclass
class Report:
    """One crash report being read: its Crash (updated in place) and what its title needs."""

    crash: Crash
    pattern: Pattern
    groups: dict
    lines: int = 0
    rip: str = ""
    in_trace: bool = False
    trace_done: bool = False
    funcs: list[str] = None  # the frames' function names, reliable ones, in order
    any_func: str = ""  # a function named anywhere in the report (lockdep's "at: func+0x..")
    access: str = ""

    def __post_init__(self):
        self.funcs = []

    def take(self, line: str) -> None:
        """One more line of this report (timestamp already stripped)."""
        self.lines += 1
        text = line.strip()
        changed = False
        if text.startswith("RIP:") and not self.rip:
            m = _RIP.match(text)
            if m:
                self.rip, changed = m.group("func"), True
        elif not self.access and text.startswith(("Read of", "Write of")):
            self.access, changed = _ACCESS.match(text).group("access"), True
        if not self.trace_done:
            frame = frame_of(line) if not text.startswith("RIP:") else None
            if frame:
                self.in_trace = True
                func, shown, unreliable = frame
                if not unreliable and len(self.crash.frames) < MAX_FRAMES:
                    self.crash.frames.append(shown)
                    self.funcs.append(func)
                    changed = True
            elif text == "Call Trace:" or _MARKERS.match(line) or _REGS.match(text):
                pass  # a register dump sits inside a trace that changes stacks (IRQ -> task)
            elif self.in_trace:
                if any(not skipped(f) for f in self.funcs):
                    self.trace_done = True  # the first stack that names a function says where it happened
                else:  # only reporting machinery (an RCU stall dumps its own kthread first): the next stack
                    self.crash.frames.clear()
                    self.funcs.clear()
                    self.in_trace, changed = False, True
        if not self.any_func and "+0x" in line and not text.startswith("? "):  # never an unreliable frame
            m = _ANY_FUNC.search(line)
            if m and not skipped(m.group("func")):
                self.any_func, changed = m.group("func"), True
        if changed:
            self.finish()

    @property
    def done(self) -> bool:
        return self.trace_done or self.lines >= MAX_REPORT_LINES

    def func(self) -> str:
        """Where it happened: the header's function, else the first frame (RIP, then the trace) that is not
        reporting machinery, else any function the report names."""
        given = self.groups.get("func")
        if given and not skipped(given):
            return given
        if self.pattern.by_lock and self.any_func:
            return self.any_func  # the "at: func+0x.." of the lock it is about, as lockdep names it
        if self.rip and not skipped(self.rip) and self.pattern.kind not in ("hung-task", "kmemleak"):
            return self.rip
        for f in self.funcs:
            if not skipped(f):
                return f
        return given or self.any_func or self.rip or (self.funcs[0] if self.funcs else "")

    def finish(self) -> None:
        """(Re)compute title and fingerprint from what has been read so far."""
        func = self.func()
        fields = {k: (v or "").strip() for k, v in self.groups.items()}
        fields.update(func=func or "?", access=self.access or "Read")
        title = self.pattern.title.format_map(fields)
        if not func:  # nothing to say where: the header line is the best title
            title = title.removesuffix(" in ?") if title.endswith(" in ?") else title
        if self.pattern.kind == "kasan" and not self.access:
            title = title.replace(" Read in ", " in ")
        title = re.sub(r"\s+", " ", title).strip()
        self.crash.title = title
        self.crash.fingerprint = fingerprint(title, self.funcs, func)


def fingerprint(title: str, funcs: list[str], func: str = "") -> str:
    """Title plus the top frames' function names after the title's own (syzkaller-style), hashed short."""
    frames = [f for f in funcs if not skipped(f)]
    if func in frames:
        frames = frames[frames.index(func) + 1:]
    text = "\n".join([title, *frames[:FINGERPRINT_FRAMES]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def match(line: str) -> tuple[Pattern, dict] | None:
    """The catalogue entry a console line (timestamp stripped) starts or continues, with its groups."""
    for p in CATALOGUE:
        m = p.regex.search(line)
        if m:
            return p, m.groupdict()
    return None


def continues(p: Pattern, open_report: Report | None) -> bool:
    """Whether this header belongs to the open report rather than starting a crash of its own."""
    if open_report is None or open_report.done:
        return False
    if p.kind == "calltrace":
        return True
    return open_report.pattern.kind in p.continues


# --- decoding: file:line per frame, with the kernel tree's own scripts/decode_stacktrace.sh -------------------

MAX_DECODED = 10  # crashes decoded per cell (addr2line on a debug vmlinux takes a second or two each)
_TS = re.compile(r"^\[\s*\d+\.\d+\]\s*")


def decode(crashes: list[Crash], console: Path, kernel_dir: Path, timeout: float = 120) -> int:
    """Replace each crash's frames by decode_stacktrace.sh's (" func (drivers/x/y.c:12)") when the kernel's
    cache entry (kernel_dir) keeps vmlinux and the script (DEBUG_INFO kernels, farm.kernel.build). Title and
    fingerprint stay as they are: they use function names only. Returns how many crashes were decoded."""
    vmlinux, script = kernel_dir / "vmlinux", kernel_dir / "decode_stacktrace.sh"
    if not (vmlinux.is_file() and script.is_file()) or not crashes:
        return 0
    try:
        lines = console.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    done = 0
    for c in [c for c in crashes if c.lineno and c.frames][:MAX_DECODED]:
        # the report as the console has it; Code: lines need scripts/decodecode, and say nothing about frames
        chunk = [x for x in lines[c.lineno - 1:c.lineno - 1 + MAX_REPORT_LINES] if "Code: " not in x]
        try:
            out = subprocess.run(["bash", str(script), str(vmlinux), "auto"], input="\n".join(chunk) + "\n",
                                 capture_output=True, text=True, timeout=timeout, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        hit = match(c.line)
        if hit is None:
            continue
        again = Report(Crash(c.kind, c.line, c.lineno), *hit)
        for line in out.splitlines()[1:]:
            again.take(_TS.sub("", line))
            if again.done:
                break
        decoded = again.crash.frames
        if decoded and any(" (" in f for f in decoded) and [frame_func(f) for f in decoded] == \
                [frame_func(f) for f in c.frames][:len(decoded)]:
            c.frames = decoded
            done += 1
    return done


def frame_func(frame: str) -> str:
    return re.split(r"[+ ]", frame, maxsplit=1)[0]


# --- kmemleak: a scan after each test --------------------------------------------------------------------------

# Run in the guest after a test on a kernel with kmemleak: a scan, and the unreferenced objects it found
# written to the console, where the crash scan reads them like any other report. kmemleak reports only
# objects older than 5 s, so the host waits for the test to be that old first (LEAK_MIN_AGE), and only
# objects whose content did not change since the previous scan: the first scan after an allocation only
# records its checksum, so two scans (measured: one scan never reported LKDTM's leaked kmalloc).
LEAK_SCAN = ("mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; f=/sys/kernel/debug/kmemleak; "
             "[ -w $f ] || exit 0; echo scan > $f && echo scan > $f && cat $f > /dev/console; cat $f")
LEAK_MIN_AGE = 5.5


def leak_scan(kernel) -> bool:
    """Whether this catalog kernel is built with kmemleak (asked for by one of its config fragments)."""
    from .kernel.config import requested  # the fragments' own parser

    if kernel.config is None:
        return False
    try:
        return requested(kernel.config.fragments).get("CONFIG_DEBUG_KMEMLEAK", ("n",))[0] == "y"
    except OSError:
        return False


def site_frames(frames: list[str]) -> list[str]:
    """The frames from where it happened on: the reporting machinery on top (dump_stack, kasan_report, __warn,
    ...) left out, as a reader wants them."""
    for i, f in enumerate(frames):
        if not skipped(frame_func(f)):
            return frames[i:]
    return frames

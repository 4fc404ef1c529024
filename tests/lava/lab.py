"""A real LAVA lab on this machine, from Debian 12's packages (./install.sh --lava), started by hand.

PID 1 here is not systemd, so the services are started the way their Debian units start them
(/lib/systemd/system/lava-*.service), with the lab's own ports on 127.0.0.1:
  PostgreSQL        pg_ctlcluster VERSION CLUSTER start (only if it is down; stopped again at the end)
  lava-server       gunicorn3 lava_server.wsgi (the web UI and the REST API; no Apache in front)
  lava-publisher    the event stream: wakes the scheduler on a submission, and the worker on a scheduled job
  lava-scheduler    assigns jobs to devices
  lava-worker       one lava-dispatcher worker, with one device `farm-qemu-01` of device type `qemu`
The database objects (device type, worker, device, a user and its token) are created once, idempotently,
in one `lava-server manage shell` (each `manage` command costs ~1.3 s of Django start-up).

Used by the tests (a module fixture), the benchmark and by hand:
    .venv/bin/python -m tests.lava.lab      # start, print the URL and token file, run until Ctrl-C
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

SETTINGS = Path("/etc/lava-server/settings.d/50-farm-lab.yaml")
DEVICES = Path("/etc/lava-server/dispatcher-config/devices")
LOCK = Path("/run/lock/farm-lava-lab.lock")
DEFAULT_ROOT = Path("/var/tmp/farm-lava-lab")
WORKER = "farm-lab-worker"
DEVICE = "farm-qemu-01"
USER = "farm-lab"
NEEDED = ("lava-server", "gunicorn3", "lava-worker", "pg_ctlcluster", "pg_lsclusters", "qemu-system-x86_64")

# The device dictionary: LAVA's qemu template; no KVM on this lab's worker (the farm chooses the accelerator).
DEVICE_DICT = "{% extends 'qemu.jinja2' %}\n{% set no_kvm = True %}\n"

# Run inside `lava-server manage shell`: create what is missing, end what a killed run left behind,
# print the worker's and the user's tokens as one JSON line.
SETUP = f"""
import json
from django.contrib.auth.models import User
from linaro_django_xmlrpc.models import AuthToken
from lava_scheduler_app.models import Device, DeviceType, TestJob, Worker
dt, _ = DeviceType.objects.get_or_create(name="qemu")
worker, _ = Worker.objects.get_or_create(hostname="{WORKER}")
worker.health = Worker.HEALTH_ACTIVE
worker.save()
device, _ = Device.objects.get_or_create(hostname="{DEVICE}", defaults=dict(device_type=dt, worker_host=worker))
stale = TestJob.objects.exclude(state=TestJob.STATE_FINISHED)
stale.update(state=TestJob.STATE_FINISHED, health=TestJob.HEALTH_CANCELED)
device.device_type, device.worker_host = dt, worker
device.state, device.health = Device.STATE_IDLE, Device.HEALTH_GOOD
device.save()
user, created = User.objects.get_or_create(username="{USER}")
if created:
    user.set_unusable_password()
    user.save()
token = AuthToken.objects.filter(user=user, description="farm lab").first() or \\
    AuthToken.objects.create(user=user, description="farm lab")
print("FARM-LAB " + json.dumps({{"worker_token": worker.token, "user_token": token.secret}}))
"""


class LabError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _descendants(roots: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def postgres_clusters() -> list[tuple[str, str, str]]:
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    return [(p[0], p[1], p[3]) for p in (line.split() for line in out.splitlines()) if len(p) >= 4]


@dataclass
class Lab:
    root: Path
    url: str = ""
    token_file: Path | None = None
    api_port: int = 0
    publisher_port: int = 0
    event_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_postgres: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _lock: object = None

    @classmethod
    def start(cls, root: Path = DEFAULT_ROOT, timeout: float = 120.0) -> Lab:
        missing = [p for p in NEEDED if not shutil.which(p)]
        if missing:
            raise LabError(f"LAVA lab: {', '.join(missing)} not installed; run ./install.sh --lava")
        lab = cls(root)
        t0 = time.monotonic()
        try:
            lab._start(timeout)
        except BaseException:
            lab.stop()
            raise
        lab.timings["total"] = round(time.monotonic() - t0, 2)
        return lab

    def _start(self, timeout: float) -> None:
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(LOCK, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(f"another farm LAVA lab runs on this machine ({LOCK} is locked)") from None
        # The server's services drop privileges to lavaserver: their log folder is its own, the tokens are not.
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        secrets = self.root / "secrets"
        secrets.mkdir(exist_ok=True)
        os.chmod(secrets, 0o700)
        (self.root / "logs").mkdir(exist_ok=True)
        shutil.chown(self.root / "logs", "lavaserver", "lavaserver")
        t = time.monotonic()
        for version, name, status in postgres_clusters():
            if status != "online":
                subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, capture_output=True)
                self.started_postgres.append((version, name))
        self.timings["postgres"] = round(time.monotonic() - t, 2)

        self.api_port, self.publisher_port, self.event_port = _free_port(), _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        # The event stream on loopback only; EVENT_NOTIFICATION makes the server publish job and device events.
        SETTINGS.write_text(f'EVENT_NOTIFICATION: true\nEVENT_SOCKET: "tcp://127.0.0.1:{self.event_port}"\n')
        DEVICES.mkdir(parents=True, exist_ok=True)
        (DEVICES / f"{DEVICE}.jinja2").write_text(DEVICE_DICT)

        t = time.monotonic()
        setup = subprocess.run(["lava-server", "manage", "shell", "-c", SETUP], capture_output=True, text=True,
                               cwd="/", timeout=120)
        line = next((x for x in setup.stdout.splitlines() if x.startswith("FARM-LAB ")), None)
        if setup.returncode or not line:
            raise LabError(f"LAVA lab setup failed ({setup.returncode}): {(setup.stderr or setup.stdout)[-2000:]}")
        tokens = json.loads(line.removeprefix("FARM-LAB "))
        self.timings["database"] = round(time.monotonic() - t, 2)
        self.token_file = secrets / "token"
        _private_file(self.token_file, tokens["user_token"] + "\n")
        worker_token = secrets / "worker-token"
        _private_file(worker_token, tokens["worker_token"] + "\n")

        t = time.monotonic()
        logs = self.root / "logs"
        self._spawn("gunicorn", ["gunicorn3", "lava_server.wsgi", "--bind", f"127.0.0.1:{self.api_port}",
                                 "--workers", "2", "--worker-class", "eventlet", "-u", "lavaserver", "-g",
                                 "lavaserver", "--log-level", "info", "--log-file", str(logs / "gunicorn.log")])
        self._spawn("publisher", ["lava-server", "manage", "lava-publisher", "--level", "INFO", "--log-file",
                                  str(logs / "publisher.log"), "--host", "127.0.0.1",
                                  "--port", str(self.publisher_port)])
        self._spawn("scheduler", ["lava-server", "manage", "lava-scheduler", "--level", "INFO", "--log-file",
                                  str(logs / "scheduler.log"), "--event-url", f"tcp://127.0.0.1:{self.event_port}"])
        self._wait(lambda: self._get("system/version/"), timeout, "the REST API to answer")
        self.timings["api"] = round(time.monotonic() - t, 2)
        self._spawn("worker", ["lava-worker", "--name", WORKER, "--url", f"{self.url}/",
                               "--ws-url", f"http://127.0.0.1:{self.publisher_port}/ws/",
                               "--token-file", str(worker_token), "--ping-interval", "2", "--worker-dir", str(self.root / "worker"),
                               "--level", "INFO", "--log-file", str(logs / "worker.log")])
        self._wait(self._device_ready, timeout, f"worker {WORKER} to come online with {DEVICE} idle")
        self.timings["worker"] = round(time.monotonic() - t - self.timings["api"], 2)

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "logs" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            cwd="/", start_new_session=True)

    def _get(self, path: str):
        try:
            r = requests.get(f"{self.url}/api/v0.2/{path}", timeout=5,
                             headers={"Authorization": f"Token {self.token()}"})
        except requests.RequestException:
            return None
        return r.json() if r.status_code == 200 else None

    def _device_ready(self) -> bool:
        worker = self._get(f"workers/{WORKER}/") or {}
        device = self._get(f"devices/{DEVICE}/") or {}
        return worker.get("state") == "Online" and device.get("state") == "Idle" and device.get("health") == "Good"

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead:
                raise LabError(f"LAVA lab: {', '.join(f'{n} exited {c}' for n, c in dead.items())} while waiting "
                               f"for {what}; logs in {self.root / 'logs'}")
            if time.monotonic() > deadline:
                raise LabError(f"LAVA lab: timed out after {timeout:.0f} s waiting for {what}; "
                               f"logs in {self.root / 'logs'}")
            time.sleep(0.2)

    def token(self) -> str:
        return self.token_file.read_text().strip() if self.token_file else ""

    def log(self, name: str) -> str:
        try:
            return (self.root / "logs" / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        # lava-worker runs each job as lava-run in a session of its own (and QEMU under a pty in another):
        # the whole tree of every service is collected first, while the parents still hold it together.
        tree = _descendants([p.pid for p in self.procs.values() if p.poll() is None])
        for name in ("worker", "scheduler", "publisher", "gunicorn"):
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in tree:  # what is left of running jobs (lava-run, QEMU)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.procs.clear()
        SETTINGS.unlink(missing_ok=True)
        for version, name in self.started_postgres:
            subprocess.run(["pg_ctlcluster", version, name, "stop"], capture_output=True)
        self.started_postgres.clear()
        if self._lock:
            self._lock.close()
            self._lock = None


def main() -> int:
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with it ignored
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    lab = Lab.start(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROOT)
    print(f"LAVA lab up in {lab.timings['total']} s ({lab.timings}): {lab.url}", flush=True)
    print(f"token file: {lab.token_file}", flush=True)
    print(f"try: farm run --lava {lab.url} --lava-token-file {lab.token_file} --job probe", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

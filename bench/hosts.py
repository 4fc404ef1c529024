#!/usr/bin/env python3
"""The farm over 1, 2 and 3 remote hosts: cells/hour and the scheduler's overhead per cell.

The hosts are network namespaces on this machine (tests/netns.py: ip netns + veth + Debian's sshd), so they
share its cores: the figures show what the remote path costs, not a speed-up. Per host count it runs one
matrix (the stock kernel x CPU models x cpuinfo) with one slot per host and nothing local (and, as a baseline,
the same on this machine's local pool with one slot), and prints:
  cells/hour        cells / wall time
  cell s            mean time inside a cell's attempt (boot, test, shutdown: timings.total)
  boot->ssh s       mean time from QEMU's start on the host to the guest's SSH, through the tunnel
  overhead s/cell   slot time not spent inside a cell: slots x wall / cells - mean cell time
                    (queueing, run.json writes, kernel/image preparation, copying to a new host; a retried
                    cell's failed attempt counts here too, see the retries column)
A cell that is not PASS is normally qemu64's cpuinfo: SKIP, as the model has no XSAVE.
Usage (as root): .venv/bin/python bench/hosts.py [--cells N] [--hosts 1,2,3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm import scheduler  # noqa: E402
from farm.catalog import Catalog  # noqa: E402
from farm.guest.keys import client_key  # noqa: E402
from farm.hosts import Host  # noqa: E402
from farm.paths import cache_root, data_root  # noqa: E402
from farm.plan import Plan  # noqa: E402
from farm.progress import Progress  # noqa: E402
from farm.vm.accel import Accel  # noqa: E402
from farm.vm.remote import RemotePool  # noqa: E402
from tests import netns  # noqa: E402


class Quiet(Progress):
    def _line(self, text: str) -> None:
        pass


def run_once(catalog: Catalog, hosts: list[netns.NetnsHost], known_hosts: Path, cpus: list[str], out: Path):
    key = client_key(cache_root() / "keys")
    pools = [RemotePool(Host(name=h.name, address=h.address, user="root", workdir=h.workdir,
                             known_hosts=known_hosts), key, "tcg") for h in hosts]
    job = catalog.job("default")
    for p in pools:
        p.ready()
    # hosts given: they run every cell (no local slot); none: this machine, one slot
    plan = Plan.new(catalog, job, ["stock"], cpus, ["cpuinfo"], out, Accel("tcg", "bench"), ["bench"], key,
                    slots=0 if pools else 1)
    plan.add_pools(pools)
    t = time.monotonic()
    record, _ = scheduler.run(plan, Quiet())
    wall = time.monotonic() - t
    for p in pools:
        p.close()
    return record, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=6, help="cells per matrix (CPU models, repeated as needed)")
    ap.add_argument("--hosts", default="0,1,2,3", help="host counts to try (0: this machine only, one slot)")
    args = ap.parse_args()
    problem = netns.available()
    if problem:
        print(f"bench/hosts.py: {problem}", file=sys.stderr)
        return 2
    catalog = Catalog(data_root())
    models = sorted(catalog.cpus)
    cpus = [models[i % len(models)] for i in range(min(args.cells, len(models)))]
    counts = [int(n) for n in args.hosts.split(",")]  # 0: the local QEMU pool, one slot, for comparison
    key = client_key(cache_root() / "keys")
    made: list[netns.NetnsHost] = []
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="farm-bench-hosts-") as tmp:
            for i in range(max(counts, default=0)):
                made.append(netns.NetnsHost(f"bench{i + 1}", [key.public]))
            known = Path(tmp) / "known_hosts"
            known.write_text("".join(h.known_hosts_line() for h in made))
            run_once(catalog, made[:1], known, cpus[:1], Path(tmp) / "warm")  # image built, first copy done
            for n in counts:
                record, wall = run_once(catalog, made[:n], known, cpus, Path(tmp) / f"run{n}")
                cells = [c for c in record.cells if c.done]
                bad = [c for c in cells if c.status != "PASS"]
                mean_cell = statistics.mean(c.timings.get("total", 0.0) for c in cells)
                mean_ssh = statistics.mean(c.timings.get("boot_to_ssh", 0.0) for c in cells)
                overhead = max(n, 1) * wall / len(cells) - mean_cell
                retries = sum(max(0, c.attempts - 1) for c in cells)  # infrastructure retries (a boot timeout)
                rows.append((n or "local", len(cells), wall, len(cells) / wall * 3600, mean_cell, mean_ssh,
                             overhead, len(bad), retries, sorted({c.host for c in cells})))
    finally:
        for h in made:
            h.close()
    print(f"{'hosts':>5} {'cells':>5} {'wall s':>7} {'cells/hour':>10} {'cell s':>7} {'boot->ssh s':>11} "
          f"{'overhead s/cell':>15} {'not PASS':>8} {'retries':>7}  hosts used")
    for n, cells, wall, rate, cell, ssh, over, bad, retries, used in rows:
        print(f"{n:>5} {cells:>5} {wall:>7.1f} {rate:>10.0f} {cell:>7.2f} {ssh:>11.2f} {over:>15.2f} {bad:>8} "
              f"{retries:>7}  {','.join(used)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

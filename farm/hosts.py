"""Farm hosts, read from an Ansible inventory (YAML or INI): the same file that provisions them.

Which hosts: the members of the group `farm_hosts` when the inventory has one, else every host.
Per host (host vars, else inherited group vars, `all` first, the nearest group last, as Ansible does):
  ansible_host                  address (default: the host's name)
  ansible_port                  SSH port (default 22)
  ansible_user                  login (default: farm)
  ansible_ssh_private_key_file  the key to log in with (default: the farm's own key); relative to the inventory
  farm_slots                    guests at once on that host (default 1)
  farm_workdir                  the host's working directory and kernel cache (default /var/tmp/farm)
  farm_known_hosts              a known_hosts file for its host key (default ~/.ssh/known_hosts); relative too
Every error names file:line and the field.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import datafile
from .errors import InputError

FARM_GROUP = "farm_hosts"
DEFAULT_USER = "farm"
DEFAULT_WORKDIR = "/var/tmp/farm"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: str = DEFAULT_USER
    slots: int = 1
    workdir: str = DEFAULT_WORKDIR
    key_file: Path | None = None
    known_hosts: Path | None = None
    where: str = ""  # file:line of its definition, for messages


@dataclass
class _Raw:
    """One host as found: its vars with where each came from, and its groups, nearest last."""

    name: str
    where: str
    vars: dict[str, tuple[Any, str]]
    groups: list[str]


class _Inventory:
    def __init__(self) -> None:
        self.hosts: dict[str, _Raw] = {}
        self.group_vars: dict[str, dict[str, tuple[Any, str]]] = {}
        self.children: dict[str, list[str]] = {}
        self.members: dict[str, list[str]] = {}

    def add_host(self, name: str, where: str, group: str, hostvars: dict[str, tuple[Any, str]]) -> None:
        if not _NAME_RE.match(name):
            raise InputError(f"{where}: host name {name!r}: use letters, digits, '.', '_' or '-' "
                             f"(host ranges like web[1:3] are not supported)")
        raw = self.hosts.setdefault(name, _Raw(name, where, {}, []))
        raw.vars.update(hostvars)
        self.members.setdefault(group, [])
        if name not in self.members[group]:
            self.members[group].append(name)

    def parents(self, group: str) -> list[str]:
        return [g for g, kids in self.children.items() if group in kids]

    def chain(self, host: str) -> list[str]:
        """The groups a host is in, outermost (all) first, nearest last."""
        direct = [g for g, names in self.members.items() if host in names]
        order: list[str] = []

        def visit(group: str, seen: tuple[str, ...]) -> None:
            if group in seen:
                return
            for parent in self.parents(group):
                visit(parent, (*seen, group))
            if group not in order:
                order.append(group)

        for g in direct:
            visit(g, ())
        order = [g for g in order if g != "all"]
        return ["all", *order]

    def in_group(self, host: str, group: str) -> bool:
        if host in self.members.get(group, []):
            return True
        return any(self.in_group(host, child) for child in self.children.get(group, []))

    def resolve(self) -> list[_Raw]:
        out = []
        for raw in self.hosts.values():
            merged: dict[str, tuple[Any, str]] = {}
            for group in self.chain(raw.name):
                merged.update(self.group_vars.get(group, {}))
            merged.update(raw.vars)
            out.append(_Raw(raw.name, raw.where, merged, self.chain(raw.name)))
        return out


# --- YAML -------------------------------------------------------------------------------------------


def _yaml_vars(doc: Any, where: str) -> dict[str, tuple[Any, str]]:
    if doc is None:
        return {}
    if not isinstance(doc, datafile.Doc):
        raise InputError(f"{where}: expected a mapping of variables")
    return {k: (v, doc.where(k)) for k, v in doc.items()}


def _yaml_group(inv: _Inventory, name: str, doc: Any, where: str) -> None:
    if doc is None:
        inv.members.setdefault(name, [])
        return
    if not isinstance(doc, datafile.Doc):
        raise InputError(f"{where}: group '{name}': expected a mapping with hosts, vars or children")
    for key in doc:
        if key not in ("hosts", "vars", "children"):
            raise InputError(f"{doc.where(key)}: group '{name}': unknown field '{key}' "
                             f"(expected hosts, vars or children)")
    inv.members.setdefault(name, [])
    inv.group_vars.setdefault(name, {}).update(_yaml_vars(doc.get("vars"), doc.where("vars")))
    hosts = doc.get("hosts")
    if hosts is not None:
        if not isinstance(hosts, datafile.Doc):
            raise InputError(f"{doc.where('hosts')}: group '{name}': field 'hosts': expected a mapping of host names")
        for host, hv in hosts.items():
            inv.add_host(str(host), hosts.where(host), name, _yaml_vars(hv, hosts.where(host)))
    children = doc.get("children")
    if children is not None:
        if not isinstance(children, datafile.Doc):
            raise InputError(f"{doc.where('children')}: group '{name}': field 'children': expected a mapping of groups")
        for child, cdoc in children.items():
            inv.children.setdefault(name, [])
            if child not in inv.children[name]:
                inv.children[name].append(child)
            _yaml_group(inv, child, cdoc, children.where(child))


def _load_yaml(path: Path) -> _Inventory:
    doc = datafile.load(path)
    inv = _Inventory()
    for group, gdoc in doc.items():
        _yaml_group(inv, group, gdoc, doc.where(group))
    return inv


# --- INI --------------------------------------------------------------------------------------------


def _ini_value(text: str) -> Any:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _ini_pairs(tokens: list[str], where: str) -> dict[str, tuple[Any, str]]:
    out = {}
    for tok in tokens:
        if "=" not in tok:
            raise InputError(f"{where}: expected key=value, got {tok!r}")
        key, value = tok.split("=", 1)
        out[key.strip()] = (_ini_value(value.strip()), where)
    return out


def _load_ini(path: Path) -> _Inventory:
    inv = _Inventory()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    section, kind = "ungrouped", "hosts"
    for n, raw in enumerate(lines, 1):
        where = f"{path}:{n}"
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
        if m:
            section, kind = m.group(1).strip(), m.group(2) or "hosts"
            inv.members.setdefault(section, [])
            continue
        if line.startswith("["):
            raise InputError(f"{where}: malformed section header {line!r}")
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            raise InputError(f"{where}: {e}") from None
        if not tokens:
            continue
        if kind == "vars":
            if "=" not in line:
                raise InputError(f"{where}: [{section}:vars]: expected key=value, got {line!r}")
            key, value = line.split("=", 1)
            inv.group_vars.setdefault(section, {})[key.strip()] = (_ini_value(value.strip().strip("'\"")), where)
        elif kind == "children":
            inv.children.setdefault(section, []).append(tokens[0])
            inv.members.setdefault(tokens[0], [])
        else:
            inv.add_host(tokens[0], where, section, _ini_pairs(tokens[1:], where))
    return inv


# --- typed hosts ------------------------------------------------------------------------------------


def _field(raw: _Raw, key: str, default: Any) -> tuple[Any, str]:
    return raw.vars.get(key, (default, raw.where))


def _int(raw: _Raw, key: str, default: int, minimum: int, maximum: int) -> int:
    value, where = _field(raw, key, default)
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: host '{raw.name}': field '{key}': expected an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise InputError(f"{where}: host '{raw.name}': field '{key}': must be {minimum}..{maximum}, got {value}")
    return value


def _str(raw: _Raw, key: str, default: str | None) -> str | None:
    value, where = _field(raw, key, default)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: host '{raw.name}': field '{key}': expected a non-empty string, got {value!r}")
    return value.strip()


def _path(raw: _Raw, key: str, base: Path) -> Path | None:
    value = _str(raw, key, None)
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _host(raw: _Raw, base: Path) -> Host:
    workdir = _str(raw, "farm_workdir", DEFAULT_WORKDIR)
    if not workdir.startswith("/"):
        _, where = _field(raw, "farm_workdir", None)
        raise InputError(f"{where}: host '{raw.name}': field 'farm_workdir': must be an absolute path, got {workdir!r}")
    return Host(
        name=raw.name,
        address=_str(raw, "ansible_host", raw.name),
        port=_int(raw, "ansible_port", 22, 1, 65535),
        user=_str(raw, "ansible_user", DEFAULT_USER),
        slots=_int(raw, "farm_slots", 1, 1, 256),
        workdir=workdir,
        key_file=_path(raw, "ansible_ssh_private_key_file", base),
        known_hosts=_path(raw, "farm_known_hosts", base),
        where=raw.where,
    )


def load(path: Path) -> list[Host]:
    """The farm hosts of an inventory file (YAML by extension or content, else INI)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: inventory file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    is_yaml = path.suffix in (".yml", ".yaml") or (first and not first.startswith("[") and first.endswith(":"))
    inv = _load_yaml(path) if is_yaml else _load_ini(path)
    raws = inv.resolve()
    if FARM_GROUP in inv.members or FARM_GROUP in inv.children:
        raws = [r for r in raws if inv.in_group(r.name, FARM_GROUP)]
    if not raws:
        raise InputError(f"{path}: no hosts" + (f" in group '{FARM_GROUP}'" if FARM_GROUP in inv.members else ""))
    hosts = [_host(r, path.parent.resolve()) for r in raws]
    if any(h.name == "local" for h in hosts):
        h = next(h for h in hosts if h.name == "local")
        raise InputError(f"{h.where}: host name 'local' is the orchestrator's own pool: choose another name")
    return hosts

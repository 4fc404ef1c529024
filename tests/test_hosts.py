"""Inventory parsing: Ansible YAML and INI inventories into typed farm hosts, errors naming file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.errors import InputError
from farm.hosts import load

from .conftest import REPO

YAML = """\
all:
  vars:
    ansible_user: farm
    farm_workdir: /var/tmp/farm
  children:
    farm_hosts:
      vars:
        farm_slots: 2
      hosts:
        alpha:
          ansible_host: 10.0.0.1
          farm_workdir: /var/tmp/farm-alpha
        beta:
          ansible_host: 10.0.0.2
          ansible_port: 2222
          farm_slots: 4
          ansible_ssh_private_key_file: keys/id
          farm_known_hosts: known_hosts
    other:
      hosts:
        gamma:
"""


def test_yaml_inventory_with_inherited_vars(tmp_path: Path):
    inv = tmp_path / "inv.yml"
    inv.write_text(YAML)
    hosts = {h.name: h for h in load(inv)}
    assert sorted(hosts) == ["alpha", "beta"]  # only the farm_hosts group when there is one
    a, b = hosts["alpha"], hosts["beta"]
    assert (a.address, a.port, a.user, a.slots, a.workdir) == ("10.0.0.1", 22, "farm", 2, "/var/tmp/farm-alpha")
    assert (b.port, b.slots, b.workdir) == (2222, 4, "/var/tmp/farm")
    assert b.key_file == tmp_path / "keys" / "id"  # relative to the inventory
    assert b.known_hosts == tmp_path / "known_hosts"
    assert a.key_file is None
    assert a.where == f"{inv}:10"


def test_every_host_when_there_is_no_farm_group(tmp_path: Path):
    inv = tmp_path / "inv.yaml"
    inv.write_text("all:\n  hosts:\n    one:\n    two:\n      farm_slots: 3\n")
    hosts = load(inv)
    assert [(h.name, h.address, h.slots) for h in hosts] == [("one", "one", 1), ("two", "two", 3)]


def test_ini_inventory(tmp_path: Path):
    inv = tmp_path / "hosts"
    inv.write_text(
        "# farm hosts\n"
        "[farm_hosts]\n"
        "alpha ansible_host=10.0.0.1 farm_slots=2\n"
        "beta ansible_host=10.0.0.2 ansible_port=2222 farm_workdir=/srv/farm\n"
        "\n"
        "[farm_hosts:vars]\n"
        "ansible_user=builder\n"
        "\n"
        "[all:vars]\n"
        "farm_slots=5\n"
        "[web]\n"
        "www1\n"
    )
    hosts = {h.name: h for h in load(inv)}
    assert sorted(hosts) == ["alpha", "beta"]
    assert (hosts["alpha"].slots, hosts["alpha"].user) == (2, "builder")
    assert (hosts["beta"].slots, hosts["beta"].port, hosts["beta"].workdir) == (5, 2222, "/srv/farm")
    assert hosts["beta"].where == f"{inv}:4"


def test_ini_children(tmp_path: Path):
    inv = tmp_path / "hosts.ini"
    inv.write_text("[rack1]\nh1\n[rack2]\nh2 farm_slots=2\n[farm_hosts:children]\nrack1\nrack2\n[rack1:vars]\nfarm_slots=3\n")
    assert [(h.name, h.slots) for h in load(inv)] == [("h1", 3), ("h2", 2)]


@pytest.mark.parametrize(("text", "where", "what"), [
    ("all:\n  hosts:\n    a:\n      farm_slots: many\n", ":4", "farm_slots"),
    ("all:\n  hosts:\n    a:\n      farm_slots: 0\n", ":4", "farm_slots"),
    ("all:\n  hosts:\n    a:\n      ansible_port: 70000\n", ":4", "ansible_port"),
    ("all:\n  hosts:\n    a:\n      farm_workdir: relative/dir\n", ":4", "farm_workdir"),
    ("all:\n  hostz:\n    a:\n", ":2", "hostz"),
    ("all:\n  hosts:\n    local:\n", ":3", "local"),
    ("all:\n  hosts: [a, b]\n", ":2", "hosts"),
    ("all:\n  hosts:\n    a:\n   bad: [\n", ":4", "YAML"),
])
def test_yaml_errors_name_file_line_and_field(tmp_path: Path, text, where, what):
    inv = tmp_path / "inv.yml"
    inv.write_text(text)
    with pytest.raises(InputError) as e:
        load(inv)
    assert f"{inv}{where}:" in str(e.value)
    assert what in str(e.value)


def test_ini_errors_name_file_line(tmp_path: Path):
    inv = tmp_path / "hosts"
    inv.write_text("[farm_hosts]\nok\nweb[1:3]\n")
    with pytest.raises(InputError, match=rf"{inv}:3: host name"):
        load(inv)
    inv.write_text("[farm_hosts]\nh farm_slots=x\n")
    with pytest.raises(InputError, match=rf"{inv}:2: host 'h': field 'farm_slots'"):
        load(inv)
    inv.write_text("[farm_hosts]\nh novalue\n")
    with pytest.raises(InputError, match=rf"{inv}:2: expected key=value"):
        load(inv)


def test_missing_and_empty_inventories(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        load(tmp_path / "nope.yml")
    empty = tmp_path / "empty.yml"
    empty.write_text("all:\n  children:\n    farm_hosts:\n")
    with pytest.raises(InputError, match="no hosts"):
        load(empty)


def test_example_inventory_loads():
    hosts = load(REPO / "ansible" / "inventory.example.yml")
    assert hosts and all(h.slots >= 1 and h.workdir.startswith("/") for h in hosts)

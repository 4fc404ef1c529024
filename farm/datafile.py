"""YAML data files that remember line numbers, so every error names file:line and the field.

Data files are small, declarative and validated strictly: unknown keys and wrong types are errors,
never silently ignored (a typo in a job file must not turn into a job that tests less).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


class Doc(dict):
    """A YAML mapping with the file it came from and the line of each key."""

    path: Path
    line: int
    key_lines: dict[str, int]

    def where(self, key: str | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key else self.line
        return f"{self.path}:{line}"


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Doc:
    doc = Doc()
    doc.path = loader.farm_path  # type: ignore[attr-defined]
    doc.line = node.start_mark.line + 1
    doc.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise InputError(f"{doc.path}:{key_node.start_mark.line + 1}: key {key!r} is not a string")
        if key in doc:
            raise InputError(f"{doc.path}:{key_node.start_mark.line + 1}: duplicate key '{key}'")
        doc[key] = loader.construct_object(value_node, deep=True)
        doc.key_lines[key] = key_node.start_mark.line + 1
    return doc


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: Path, display: Path | None = None) -> Doc:
    """Load one YAML file whose top level must be a mapping."""
    shown = display or path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{shown}: cannot read: {e}") from None
    try:
        loader = _Loader(text)
    except yaml.YAMLError as e:  # the reader rejects control characters before parsing starts
        raise InputError(f"{shown}: YAML error: {e}") from None
    loader.farm_path = shown  # type: ignore[attr-defined]
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{shown}{line}: YAML error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{shown}: YAML error: {e}") from None
    finally:
        loader.dispose()
    if not isinstance(data, Doc):
        raise InputError(f"{shown}:1: expected a mapping of fields at the top level, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {
        type(None): "nothing",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        Doc: "a mapping",
    }.get(type(value), type(value).__name__)


class Fields:
    """Take typed fields out of a Doc; `done()` rejects whatever key nobody asked for."""

    def __init__(self, doc: Doc, what: str):
        self.doc = doc
        self.what = what
        self.known: list[str] = []

    def _get(self, key: str, required: bool) -> Any:
        self.known.append(key)
        if key not in self.doc:
            if required:
                raise InputError(f"{self.doc.where()}: {self.what}: missing required field '{key}'")
            return None
        if self.doc[key] is None and required:
            raise InputError(f"{self.doc.where(key)}: field '{key}': is empty but required")
        return self.doc[key]

    def _fail(self, key: str, want: str, value: Any) -> InputError:
        return InputError(f"{self.doc.where(key)}: field '{key}': expected {want}, got {_kind(value)} {value!r}")

    def str(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "a non-empty string", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.str(key, default)
        if value not in choices:
            raise InputError(f"{self.doc.where(key)}: field '{key}': expected one of {', '.join(choices)}, "
                             f"got {value!r}")
        return value

    def number(self, key: str, default: float | None = None, positive: bool = True) -> float | None:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, "a number", value)
        if positive and value <= 0:
            raise InputError(f"{self.doc.where(key)}: field '{key}': must be > 0, got {value}")
        return value

    def int(self, key: str, default: int | None = None, minimum: int = 0, required: bool = False) -> int | None:
        value = self._get(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer", value)
        if value < minimum:
            raise InputError(f"{self.doc.where(key)}: field '{key}': must be >= {minimum}, got {value}")
        return value

    def str_list(self, key: str, required: bool = False) -> list[str]:
        value = self._get(key, required)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self._fail(key, "a list of strings", value)
        return list(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def paths(self, key: str, base: Path, folders: bool = False) -> list[Path]:
        """A list of file names (or, with folders, files or folders) relative to base; each must exist."""
        out = []
        for entry in self.str_list(key):
            p = base / entry
            if not (p.exists() if folders else p.is_file()):
                what = "file or folder" if folders else "file"
                raise InputError(f"{self.doc.where(key)}: field '{key}': no such {what} {p}")
            out.append(p)
        return out

    def mapping(self, key: str, required: bool = False) -> Doc | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, Doc):
            raise self._fail(key, "a mapping", value)
        return value

    def done(self) -> None:
        for key in self.doc:
            if key not in self.known:
                known = ", ".join(self.known)
                raise InputError(f"{self.doc.where(key)}: {self.what}: unknown field '{key}' (known: {known})")

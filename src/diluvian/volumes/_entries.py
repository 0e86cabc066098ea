"""Validation of one table of a dataset TOML (shared by the backends' ``from_entry``)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DiluvianError


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option most similar to ``name`` (case-insensitive), or None when none is close."""
    options = list(options)
    lowered = {o.lower(): o for o in options}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


class Entry:
    """One ``[[table]]`` of a dataset TOML, with error messages that name the file, table and key.

    Parameters
    ----------
    entry : dict
        The parsed table.
    toml_path : path-like
        The TOML file (relative paths in the entry are relative to its directory).
    table : str
        Table name, e.g. ``"dataset"``.
    keys : iterable of str
        All valid keys.
    required : iterable of str
        Keys that must be present (``name`` is always required).
    number : int
        Position of the table in its array (for messages when it has no name).
    """

    def __init__(self, entry: Any, toml_path: str | os.PathLike, table: str, keys: Iterable[str],
                 required: Iterable[str] = (), number: int = 1) -> None:
        self.toml = Path(toml_path)
        self.table = table
        self.where = f"{self.toml}: [[{table}]] #{number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{self.where}: expected a table, got {type(entry).__name__}")
        self.values = dict(entry)
        keys = list(keys)
        if "name" not in self.values:
            raise ConfigError(f"{self.where}: missing required key 'name'")
        name = self.values["name"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.where}: name: expected a non-empty string, got {name!r}")
        self.name = name
        self.where = f"{self.toml}: [[{table}]] {name!r}"
        for key in self.values:
            if key not in keys:
                hint = closest(key, keys)
                hint_text = f" (did you mean {hint!r}?)" if hint else ""
                raise ConfigError(f"{self.where}: unknown key {key!r}{hint_text}; valid keys: {', '.join(keys)}")
        for key in required:
            if key not in self.values:
                raise ConfigError(f"{self.where}: missing required key {key!r}")

    def error(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: expected {expected}, got {self.values.get(key)!r}")

    def string(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, "a non-empty string")
        return value

    def path(self, key: str) -> Path | None:
        """A path key, made relative to the TOML's directory unless absolute."""
        value = self.string(key)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.toml.parent / p

    def resolution(self, key: str = "resolution") -> NDArray[np.float64] | None:
        value = self.values.get(key)
        if value is None:
            return None
        ok = (isinstance(value, list) and len(value) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0
                      for v in value))
        if not ok:
            raise self.error(key, "3 positive numbers (nm, ZYX)")
        return np.asarray(value, dtype=np.float64)

    def box(self, key: str = "mask_bounds") -> NDArray[np.int64] | None:
        value = self.values.get(key)
        if value is None:
            return None
        ok = (isinstance(value, list) and len(value) == 2
              and all(isinstance(row, list) and len(row) == 3
                      and all(isinstance(v, int) and not isinstance(v, bool) for v in row) for row in value))
        if not ok:
            raise self.error(key, "[[z0, y0, x0], [z1, y1, x1]] (ints)")
        return np.asarray(value, dtype=np.int64)

    def reraise(self, error: DiluvianError) -> DiluvianError:
        """The same kind of error with the TOML file and table in front of its message."""
        return type(error)(f"{self.where}: {error}")

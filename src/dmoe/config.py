"""The ``dmoe run`` configuration file: TOML <-> the run's configuration (issue 16, item 5).

A configuration file holds the options of ``dmoe run`` in tables::

    [system]                       # the nodes and the radio
    num_subcarriers = 64
    snr_db = 10.0
    wire_dtype = "fp16"

    [channel]
    channel_model = "tdl-a"        # or: channel = "tdl-a" (the flag --channel)
    speed_kmh = 3.0

    [policies]
    policies = ["Top-8", "JESA(0.9,8)"]

Rules:

* **Keys** are the parameter names ``dmoe config --defaults`` prints (``snr_db``,
  ``channel_model``, ``policies``, ``model_source``); the long flag works too (``snr-db``,
  ``channel``, ``policy``, ``model``), with ``-`` or ``_``. Files are written with the
  parameter names.
* **Tables**: :data:`SECTIONS` maps every parameter to its table; a parameter not listed
  there belongs to ``[run]`` (:data:`DEFAULT_SECTION`). A new ``dmoe run`` option needs no
  change here beyond, optionally, one line in :data:`SECTIONS`.
* **Values**: TOML strings, integers, floats (finite; an integer is accepted for a float),
  booleans, and for repeatable options (``--policy``, ``--subject``) a list (or one
  string). TOML has no null: an option left at its unset default (``--limit``, ``-K``) is
  simply absent.
* **Precedence**: a flag on the command line beats the file, which beats the built-in
  default (the file is click's ``default_map`` of the ``run`` command).

Errors (:class:`ConfigError`, a ValueError) name the key, the file and the rule: an unknown
table or key, a key in the wrong table (naming the right one), a key given twice (by name
and by flag), a value of the wrong type or out of range.
"""

from __future__ import annotations

import math
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any, Mapping

import click

__all__ = [
    "SECTIONS",
    "DEFAULT_SECTION",
    "ConfigError",
    "config_params",
    "parse_config",
    "read_config",
    "default_values",
    "sectioned",
    "flatten",
    "dump_toml",
    "defaults_toml",
]

#: the table of every ``dmoe run`` parameter (by its parameter name); others go to [run]
SECTIONS: dict[str, str] = {
    # the nodes, the OFDMA grid, the devices and the hidden state on the wire
    "preset": "system",
    "num_experts": "system",
    "num_nodes": "system",
    "num_subcarriers": "system",
    "snr_db": "system",
    "comp_throughput": "system",
    "wire_dtype": "system",
    "hidden_state_bytes": "system",
    "noise_figure": "system",
    "tx_power_dbm": "system",
    # where the nodes stand and how the signal decays between them
    "layout": "geometry",
    "pathloss": "geometry",
    # fading, mobility and how often it is redrawn
    "channel_model": "channel",
    "delay_spread": "channel",
    "speed_kmh": "channel",
    "carrier_ghz": "channel",
    "channel_redraw": "channel",
    # the server's channel knowledge
    "csi_error": "csi",
    "csi_delay": "csi",
    # experts on nodes
    "placement": "placement",
    # which policies run
    "policies": "policies",
    "gamma0": "policies",
    "qos": "policies",
    "max_experts": "policies",
    "profile": "policies",
    # the model
    "model_source": "model",
    "combine": "model",
    "device": "model",
    "cache_dir": "model",
    # the questions and held-out texts
    "subjects": "data",
    "limit": "data",
    "ppl_texts": "data",
    # where the nodes run, and their failures
    "engine": "engine",
    "ray_address": "engine",
    "node_failure_rate": "engine",
    "node_rejoin": "engine",
}
#: the table of parameters :data:`SECTIONS` does not list (seed, output, quiet, ...)
DEFAULT_SECTION = "run"
#: the order tables are written in (tables not listed follow, sorted)
_TABLE_ORDER = ("system", "geometry", "channel", "csi", "placement", "policies", "model", "data", "engine", "run")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key and the file."""


def config_params(command: click.Command) -> dict[str, click.Parameter]:
    """The parameters of ``command`` a configuration holds: {parameter name: parameter},
    every named parameter with a value (``expose_value``), in the command's order."""
    return {p.name: p for p in command.params if p.name and p.expose_value}


def section_of(name: str) -> str:
    """The table of parameter ``name``: :data:`SECTIONS`, else :data:`DEFAULT_SECTION`."""
    return SECTIONS.get(name, DEFAULT_SECTION)


def _tables(command: click.Command) -> list[str]:
    found = {section_of(n) for n in config_params(command)}
    return [t for t in _TABLE_ORDER if t in found] + sorted(found - set(_TABLE_ORDER))


def _norm(key: str) -> str:
    return key.replace("-", "_")


def _key_index(command: click.Command) -> dict[str, str]:
    """{accepted key (normalised) -> parameter name}: parameter names, then long flags that
    are not another parameter's name."""
    params = config_params(command)
    index = {_norm(n): n for n in params}
    for name, p in params.items():
        for opt in getattr(p, "opts", []):  # not --no-x: it would mean the opposite
            if opt.startswith("--"):
                index.setdefault(_norm(opt[2:]), name)
    return index


def _expected(param: click.Parameter) -> str:
    """'boolean', 'integer', 'number' or 'string': the TOML type of one value of ``param``."""
    t = param.type
    if isinstance(param, click.Option) and param.is_flag and not param.count:
        return "boolean"
    if isinstance(t, click.types.BoolParamType):
        return "boolean"
    if isinstance(t, click.types.IntParamType):
        return "integer"
    if isinstance(t, click.types.FloatParamType):
        return "number"
    return "string"


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def _check_value(param: click.Parameter, key: str, table: str, value: Any, where: str, ctx) -> Any:
    """``value`` of ``param`` from the file, type-checked and converted by click's type."""
    expected = _expected(param)
    multiple = bool(getattr(param, "multiple", False))
    label = f"`{key}` in [{table}] of {where}"
    if multiple:
        items = [value] if _type_ok(value, expected) else value
        if not isinstance(items, list) or not all(_type_ok(v, expected) for v in items):
            raise ConfigError(f"{label} must be a list of {expected}s (or one {expected}), got {value!r}")
    else:
        if not _type_ok(value, expected):
            article = "an" if expected[0] in "aeiou" else "a"
            raise ConfigError(f"{label} must be {article} {expected}, got {type(value).__name__} {value!r}")
        items = [value]
    for v in items:
        if expected == "number" and not math.isfinite(float(v)):
            raise ConfigError(f"{label} must be a finite number, got {v!r}")
    try:
        converted = [param.type.convert(float(v) if expected == "number" else v, param, ctx) for v in items]
    except click.BadParameter as exc:
        raise ConfigError(f"{label}: {exc.message}") from exc
    return converted if multiple else converted[0]


def parse_config(data: Mapping[str, Any], command: click.Command, *, source: str = "<config>") -> dict[str, Any]:
    """Validate a parsed TOML document for ``command``: ``{parameter name: value}`` (lists
    for repeatable options), only the keys the document sets.

    Args:
        data: the document (``tomllib.loads``'s result): {table: {key: value}}.
        command: the click command whose parameters the keys name (``dmoe run``).
        source: how errors name the document (the file's path).

    Raises:
        ConfigError: an unknown table or key, a key outside its table (naming the right
            one) or given twice, a wrong type or an invalid value; each names the key and
            ``source``.
    """
    params = config_params(command)
    index = _key_index(command)
    tables = _tables(command)
    ctx = click.Context(command)
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for table, body in data.items():
        if not isinstance(body, Mapping):
            name = index.get(_norm(table))
            if name is not None:
                raise ConfigError(f"`{table}` at the top of {source} must sit in the [{section_of(name)}] table")
            raise ConfigError(f"unknown key `{table}` at the top of {source}; every key sits in one of the tables "
                              f"{', '.join(f'[{t}]' for t in tables)}")
        if table not in tables:
            raise ConfigError(f"unknown table [{table}] in {source}; known tables: "
                              f"{', '.join(f'[{t}]' for t in tables)}")
        for key, value in body.items():
            name = index.get(_norm(key))
            if name is None:
                known = sorted(n for n in params if section_of(n) == table)
                raise ConfigError(f"unknown key `{key}` in [{table}] of {source}; [{table}] takes "
                                  f"{', '.join(known) or 'no key'} (`dmoe config --defaults` lists every key)")
            if section_of(name) != table:
                raise ConfigError(f"`{key}` in [{table}] of {source} belongs in the [{section_of(name)}] table")
            if name in out:
                raise ConfigError(f"`{key}` in [{table}] of {source} sets `{name}` again (also set as `{given[name]}`)")
            out[name] = _check_value(params[name], key, table, value, source, ctx)
            given[name] = key
    return out


def read_config(path, command: click.Command) -> dict[str, Any]:
    """Read and validate the TOML file at ``path`` for ``command`` (:func:`parse_config`).

    Raises:
        ConfigError: unreadable file, invalid TOML, or any rule of :func:`parse_config`
            broken (the message names the file).
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {str(p)!r}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from exc
    return parse_config(data, command, source=str(p))


def default_values(command: click.Command) -> dict[str, Any]:
    """``{parameter name: built-in default}`` of ``command`` (no file; tuples as lists)."""
    # what the command itself resolves for an empty command line (callbacks off)
    ctx = command.make_context(command.name, [], resilient_parsing=True)
    return {name: _plain(ctx.params.get(name)) for name in config_params(command)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def sectioned(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{parameter name: value}`` grouped by table (:data:`SECTIONS`), tables in the order
    they are written; None values (unset options) left out, tuples made lists."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if value is None:
            continue
        out.setdefault(section_of(name), {})[name] = _plain(value)
    order = {t: i for i, t in enumerate(_TABLE_ORDER)}
    return {t: out[t] for t in sorted(out, key=lambda t: (order.get(t, len(order)), t))}


def flatten(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Inverse of :func:`sectioned`: ``{parameter name: value}``."""
    return {k: v for body in sections.values() for k, v in body.items()}


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"cannot write the unpaired surrogate U+{code:04X} of {text!r} to TOML")
        else:
            out.append(ch)
    return "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the non-finite number {value!r} to a configuration")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} ({value!r}) to TOML")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _comment(text: str) -> list[str]:
    return [("# " + line).rstrip() for line in textwrap.wrap(" ".join(text.split()), 96)] if text else []


def dump_toml(sections: Mapping[str, Mapping[str, Any]], *, header: str = "",
              comments: Mapping[str, str] | None = None, unset: Mapping[str, list[str]] | None = None,
              order: list[str] | None = None) -> str:
    """TOML text of ``{table: {key: value}}`` that ``tomllib.loads`` reads back equal
    (tuples as lists); values are str, int, float (finite), bool or lists of them.

    Args:
        header: a comment at the top.
        comments: {key: text} written as a comment above the key.
        unset: {table: [key, ...]} written as commented-out lines (options left unset).
        order: keys in the order to write them within a table (default: set keys, then unset).

    Raises:
        ValueError: a non-finite float or an unpaired surrogate in a string.
        TypeError: a value of another type (None included: leave unset keys out).
    """
    comments = comments or {}
    unset = unset or {}
    lines = _comment(header)
    table_rank = {t: i for i, t in enumerate(_TABLE_ORDER)}
    tables = sorted(set(sections) | {t for t, keys in unset.items() if keys},
                    key=lambda t: (table_rank.get(t, len(table_rank)), t))
    for table in tables:
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(table)}]")
        body = sections.get(table, {})
        keys = [*body, *[k for k in unset.get(table, []) if k not in body]]
        if order is not None:
            rank = {k: i for i, k in enumerate(order)}
            keys.sort(key=lambda k: rank.get(k, len(rank)))
        for key in keys:
            lines += _comment(comments.get(key, ""))
            if key in body:
                lines.append(f"{_toml_key(key)} = {_toml_value(body[key])}")
            else:
                lines.append(f"# {_toml_key(key)} =    (unset)")
    return "\n".join(lines) + "\n"


def defaults_toml(command: click.Command) -> str:
    """The built-in defaults of ``command`` as a commented TOML configuration (each key
    above its option's help; options unset by default as commented-out lines) that
    :func:`parse_config` reads back to exactly the defaults' set values."""
    values = default_values(command)
    params = config_params(command)
    comments = {}
    for name, p in params.items():
        flags = "/".join(getattr(p, "opts", [])) + "".join(f"/{o}" for o in getattr(p, "secondary_opts", []))
        comments[name] = f"{flags}: {getattr(p, 'help', '') or ''}".strip()
    unset: dict[str, list[str]] = {}
    for name, value in values.items():
        if value is None:
            unset.setdefault(section_of(name), []).append(name)
    header = (f"defaults of `dmoe {command.name}`; keys are its parameter names (or the long flag, with - or _), "
              "a flag on the command line beats the file; use with `dmoe run --config FILE`")
    return dump_toml(sectioned(values), header=header, comments=comments, unset=unset, order=list(params))

"""Policies from outside dmoe: an import path ``"mypkg.mod:BestChannel(0.8, 8)"`` or a name
that an installed package registers under the entry-point group ``dmoe.policies``.

Spec grammar (``dmoe run --policy``, ``run_main_job(policies=[...])``, the ``policies`` of a
configuration file)::

    module.path:Attr(args)     import module.path, take Attr (dots allowed), call it
    Name(args)                 the entry point Name of group "dmoe.policies"

``(args)`` may be left out (no arguments). Each argument, positional or ``key=value``, must
be a Python literal (number, string, tuple, list, dict, set, True/False/None): it is read by
:func:`ast.literal_eval`, never evaluated. The attribute must be a subclass of
:class:`~dmoe.policies.base.Policy`. The built-in forms (``Top-k``, ``H``, ``JESA``, ``LB``,
``DES``, ``dense``) are parsed first, and an entry point may not take one of their names:
using a plugin named like a built-in family raises an error naming the distribution.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re

from dmoe.policies.base import Policy

__all__ = ["ENTRY_POINT_GROUP", "RESERVED_NAMES", "is_import_spec", "load_params", "load_spec", "plugin_names"]

#: The entry-point group installed packages register their policies under.
ENTRY_POINT_GROUP = "dmoe.policies"
#: Names (case-insensitive) of the built-in families; no plugin may use them.
RESERVED_NAMES = frozenset({"top", "topk", "top-k", "h", "jesa", "lb", "des", "dense", "deadline"})

_IMPORT_RE = re.compile(r"\s*([A-Za-z_][\w.]*)\s*:\s*([A-Za-z_][\w.]*)\s*(?:\((.*)\))?\s*", re.S)
_IMPORT_HEAD_RE = re.compile(r"\s*([A-Za-z_][\w.]*)\s*:(.*)", re.S)
_MAX_SHOWN = 160


def _cut(text: str) -> str:
    """``text``, its middle cut out when longer than ``_MAX_SHOWN`` characters (error messages)."""
    if len(text) <= _MAX_SHOWN:
        return text
    return f"{text[: _MAX_SHOWN - 50]}...<{len(text) - _MAX_SHOWN + 10} characters>...{text[-40:]}"


def _q(text: str) -> str:
    return repr(_cut(text))
_NAME_RE = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(?:\((.*)\))?\s*", re.S)


def is_import_spec(spec) -> bool:
    """Whether ``spec`` has the form ``module:Attr(...)``."""
    return isinstance(spec, str) and _IMPORT_RE.fullmatch(spec) is not None


def _arguments(text: str | None, spec: str) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of ``"0.8, 8, z=1"``: each a literal (``ast.literal_eval``)."""
    if text is None or not text.strip():
        return (), {}
    try:
        tree = ast.parse(f"_({text})", mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"policy {_q(spec)}: the arguments ({_cut(text)}) do not parse: {exc.msg}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_"):
        raise ValueError(f"policy {_q(spec)}: the arguments ({_cut(text)}) must be one comma-separated list")

    def literal(node):
        if isinstance(node, ast.Starred):
            raise ValueError(f"policy {_q(spec)}: `*` arguments are not allowed; write the values")
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                f"policy {_q(spec)}: argument {_q(ast.unparse(node))} is not a Python literal (numbers, strings, "
                "tuples, lists, dicts, True/False/None; names and expressions are never evaluated)"
            ) from None

    args = tuple(literal(node) for node in call.args)
    kwargs = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise ValueError(f"policy {_q(spec)}: `**` arguments are not allowed; write key=value")
        if kw.arg in kwargs:
            raise ValueError(f"policy {_q(spec)}: keyword argument {kw.arg!r} is given twice")
        kwargs[kw.arg] = literal(kw.value)
    return args, kwargs


def _check_class(obj, where: str, spec: str) -> None:
    """Raise unless ``obj`` is a concrete Policy subclass."""
    if not (isinstance(obj, type) and issubclass(obj, Policy)):
        what = f"the {type(obj).__name__} {obj!r}" if not isinstance(obj, type) else f"the class {obj.__qualname__}"
        raise ValueError(f"policy {_q(spec)}: {where} is {what}, not a subclass of dmoe.policies.Policy")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise ValueError(f"policy {_q(spec)}: {where} is abstract (implement {missing})")


def _build(obj, where: str, args: tuple, kwargs: dict, spec: str) -> Policy:
    """``obj(*args, **kwargs)`` once ``obj`` is checked to be a concrete Policy subclass."""
    _check_class(obj, where, spec)
    try:
        policy = obj(*args, **kwargs)
    except Exception as exc:  # a user's constructor: report whatever it raised, naming the policy
        raise ValueError(f"policy {_q(spec)}: {where}(...) raised {type(exc).__name__}: {exc}") from exc
    return policy


def _resolve(module: str, attr: str, spec: str):
    """The object ``module:attr`` names (``attr`` may be dotted)."""
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ValueError(f"policy {_q(spec)}: module {module!r} does not import ({type(exc).__name__}: {exc})") from exc
    obj = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"policy {_q(spec)}: module {module!r} has no attribute {attr!r}") from None
    return obj


def load_params(kind: str, values: dict) -> Policy:
    """The plugin policy a :meth:`~dmoe.policies.base.Policy.params` record describes: ``kind``
    ``"module:QualName"`` and ``values`` the constructor's arguments by parameter name (a
    ``*args`` parameter's tuple and a ``**kwargs`` parameter's dict under their own names,
    passed back as positional and keyword arguments).

    Raises:
        ValueError: as :func:`load_spec` (naming ``kind``): a module that does not import, a
        missing attribute, not a Policy subclass, a constructor that raised.
    """
    match = _IMPORT_RE.fullmatch(kind) if isinstance(kind, str) else None
    if match is None or match.group(3) is not None:
        raise ValueError(f"`policy` {kind!r} must read 'module:Class'")
    module, attr = match.group(1), match.group(2)
    where = f"{module}:{attr}"
    obj = _resolve(module, attr, kind)
    _check_class(obj, where, kind)
    args, kwargs = (), dict(values)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # no signature to read: every value by keyword
        sig = None
    if sig is not None:
        bound = inspect.BoundArguments(sig, {k: v for k, v in values.items() if k in sig.parameters})
        args, kwargs = bound.args, {**bound.kwargs, **{k: v for k, v in values.items() if k not in sig.parameters}}
    return _build(obj, where, args, kwargs, kind)


def _from_import_path(match: re.Match, spec: str) -> Policy:
    module, attr, text = match.group(1), match.group(2), match.group(3)
    args, kwargs = _arguments(text, spec)
    return _build(_resolve(module, attr, spec), f"{module}:{attr}", args, kwargs, spec)


def _entry_points() -> list:
    import importlib.metadata  # only when a name is not a built-in (start-up time)

    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def plugin_names() -> list[str]:
    """Names registered under the entry-point group ``dmoe.policies`` (sorted, each once)."""
    return sorted({ep.name for ep in _entry_points()})


def _dist(ep) -> str:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "an installed package"


def _from_entry_point(name: str, text: str | None, spec: str):
    """The policy of entry point ``name``, or None when no package registers it."""
    found = [ep for ep in _entry_points() if ep.name == name]
    if not found:
        return None
    if name.lower() in RESERVED_NAMES:
        raise ValueError(
            f"policy {_q(spec)}: the entry point {name!r} of {_dist(found[0])} (group {ENTRY_POINT_GROUP!r}) takes the "
            "name of a built-in policy family; built-in forms come first, so register it under another name"
        )
    targets = {ep.value for ep in found}
    if len(targets) > 1:
        raise ValueError(
            f"policy {_q(spec)}: the entry point {name!r} (group {ENTRY_POINT_GROUP!r}) is registered twice, by "
            f"{', '.join(sorted(_dist(ep) for ep in found))} ({', '.join(sorted(targets))}); use the import path "
            "'module:Class(...)' instead"
        )
    args, kwargs = _arguments(text, spec)
    ep = found[0]
    try:
        obj = ep.load()
    except Exception as exc:
        raise ValueError(
            f"policy {_q(spec)}: the entry point {name!r} = {ep.value!r} of {_dist(ep)} does not load "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return _build(obj, f"{ep.value} (entry point {name!r})", args, kwargs, spec)


def _malformed(spec: str, module: str, rest: str) -> str:
    """The message for a ``module:...`` spec that is not ``module:Attr(args)``."""
    attr = re.match(r"\s*([A-Za-z_][\w.]*)\s*", rest)
    if attr is None:
        why = f"after {module + ':'!r} give a class name, e.g. '{module}:MyPolicy(0.8, 8)'"
    else:
        tail = rest[attr.end():].rstrip()
        opened, closed = tail.count("("), tail.count(")")
        if tail.startswith("(") and opened != closed:
            why = f"unbalanced parentheses ({opened} '(' and {closed} ')'); write '{module}:{attr.group(1)}(args)'"
        else:
            why = f"only '(arguments)' may follow {module}:{attr.group(1)}, got {_q(tail)}"
    return f"policy {_q(spec)}: not of the form 'module:Class(args)': {why}"


def load_spec(spec: str):
    """The policy ``spec`` names as a plugin: ``module:Attr(args)`` or an entry point's
    ``Name(args)``; None when ``spec`` is neither (no ``:`` form and no entry point of that name).

    Raises:
        ValueError: naming ``spec`` and the rule: a module that does not import (with the
        reason), a missing attribute, an object that is not a Policy subclass, arguments
        that are not literals (or a keyword given twice), a ``module:...`` form that is not
        ``module:Attr(args)`` (unbalanced parentheses, say), a constructor that raised (its
        exception chained), an entry point named like a built-in or registered twice.
    """
    match = _IMPORT_RE.fullmatch(spec)
    if match is not None:
        return _from_import_path(match, spec)
    head = _IMPORT_HEAD_RE.fullmatch(spec)
    if head is not None:  # "module:..." that is not "module:Attr(args)": say what is wrong with it
        raise ValueError(_malformed(spec, head.group(1), head.group(2)))
    match = _NAME_RE.fullmatch(spec)
    if match is None:
        return None
    return _from_entry_point(match.group(1), match.group(2), spec)

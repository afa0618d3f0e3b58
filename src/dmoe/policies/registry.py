"""Policies by name: the labels of the built-ins (``"Top-2"``, ``"JESA(0.9,2)"``, ...), the
calibrated and deadline forms, and plugins (``"mypkg.mod:BestChannel(0.8,8)"``, or a name
registered under the entry-point group ``dmoe.policies``; :mod:`dmoe.policies.plugins`).

:func:`policy_from_name` reads the strings of ``dmoe run --policy``; :func:`policy_from_params`
reads back :meth:`~dmoe.policies.base.Policy.params` (a run's ``summary.json``).
"""

from __future__ import annotations

import re

from dmoe.policies.base import Policy
from dmoe.policies.builtin import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.policies.calibrated import CALIBRATED_KINDS, calibrated_from_params, is_calibrated_name, parse_calibrated
from dmoe.policies.deadline import Deadline
from dmoe.policies.layerwise import DESPolicy, LayerwiseQoS
from dmoe.policies.plugins import ENTRY_POINT_GROUP, load_params, load_spec, plugin_names

__all__ = ["policy_from_name", "policy_from_params", "policy_spec"]

_NUM = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
_INT = r"\s*([0-9]+)\s*"
_FORMS = (
    "'Top-k' / 'topk' (e.g. 'Top-2', 'top2'), 'H(z,D)' (e.g. 'H(0.8,2)'), "
    "'JESA(gamma0,D)' or 'JESA(gamma0,D,z)' (e.g. 'JESA(0.9,2)'), 'LB(gamma0,D)' or 'LB(gamma0,D,z)' (e.g. 'LB(0.9,2)'), 'dense'"
    ", calibrated 'JESA(cal:B,D)' / 'DES(cal:B,D)' / 'LB(cal:B,D)' (e.g. 'JESA(cal:0.5,2)', needs `dmoe calibrate`); "
    "any but dense with a layer-round deadline T [s] appended as '[T=<seconds>s]' (e.g. 'JESA(0.9,2)[T=5s]')"
    ", 'DES(gamma0,D)' (Table I), and plugins: 'module:Class(args)' (e.g. 'mypkg.mod:BestChannel(0.8,8)', "
    "arguments as Python literals) or 'Name(args)' of a package registering Name under the entry-point group "
    f"{ENTRY_POINT_GROUP!r}"
)




def policy_from_name(name: str, *, profile=None, warn=None) -> Policy:
    """Parse a policy string (CLI ``--policy``): the built-in labels "Top-2", "top2",
    "H(0.8,2)", "JESA(0.9,2)", "JESA(0.9,2,1.0)", "LB(0.9,2)", "DES(0.9,2)", "dense"
    (case-insensitive, spaces ignored); the calibrated forms "JESA(cal:0.5,2)",
    "DES(cal:0.5,2)", "LB(cal:0.5,2)" that need ``profile`` (an
    :class:`~dmoe.optimize.qos_allocation.ImportanceProfile`; see :mod:`dmoe.policies.calibrated`;
    ``warn`` receives the message of a budget it cannot meet); any of these but dense with
    "[T=<seconds>s]" appended (:class:`~dmoe.policies.deadline.Deadline`); and plugins,
    "module:Class(args)" or an entry point's "Name(args)" (:mod:`dmoe.policies.plugins`;
    the built-in forms come first). ``policy_from_name(p.spec)`` rebuilds a policy ``p``.

    Raises:
        ValueError: listing the accepted forms when ``name`` matches none; naming the
        policy string and the broken rule when it matches a form with a bad value
        (e.g. "policy 'Top-0': `k` must be >= 1, got 0"); for a calibrated form without
        ``profile``, telling the user to run ``dmoe calibrate``; for a plugin, as
        :func:`~dmoe.policies.plugins.load_spec` (module that does not import, missing
        attribute, not a Policy subclass, arguments that are not literals, a constructor
        that raised).
    """
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a string; accepted forms: {_FORMS}")
    s = name.strip()
    m = re.fullmatch(r"(?i)(.*?)\s*\[\s*T\s*=\s*([^\]]*?)\s*\]", s)
    if m:
        base = policy_from_name(m.group(1), profile=profile, warn=warn)
        value = re.fullmatch(r"(?i)([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[-+]?[0-9]+)?|[-+]?inf|nan)\s*s?", m.group(2))
        if value is None:
            raise ValueError(f"policy {name!r}: the deadline must read [T=<seconds>s], e.g. [T=0.5s], got "
                             f"[T={m.group(2)}]")
        try:
            return Deadline(base, float(value.group(1)))
        except ValueError as exc:
            raise ValueError(f"policy {name!r}: {exc}") from None
    if is_calibrated_name(s):
        return parse_calibrated(s, profile=profile, warn=warn)
    try:
        return _parse_policy(s, name)
    except ValueError as exc:
        if not str(exc).startswith("unknown policy"):
            # a constructor's rule ("`k` must be >= 1") names the policy string it came from
            raise ValueError(f"policy {name!r}: {exc}") from None
        unknown = exc
    plugin = load_spec(s)
    if plugin is None:
        names = plugin_names()
        if names:
            raise ValueError(f"{unknown}; installed plugins ({ENTRY_POINT_GROUP!r}): {', '.join(names)}") from None
        raise unknown
    return plugin


def _parse_policy(s: str, name: str) -> Policy:
    m = re.fullmatch(r"(?i)top\s*-?" + _INT, s)
    if m:
        return TopK(int(m.group(1)))
    m = re.fullmatch(r"(?i)h\s*\(" + _NUM + "," + _INT + r"\)", s)
    if m:
        return Homogeneous(float(m.group(1)), int(m.group(2)))
    for label, cls in (("jesa", JESAPolicy), ("lb", LowerBound), ("des", DESPolicy)):
        m = re.fullmatch(r"(?i)" + label + r"\s*\(" + _NUM + "," + _INT + r"(?:," + _NUM + r")?\)", s)
        if m:
            qos = float(m.group(3)) if m.group(3) is not None else 1.0
            return cls(float(m.group(1)), int(m.group(2)), qos)
    if s.lower() == "dense":
        return Dense()
    raise ValueError(f"unknown policy `name` {name!r}; accepted forms: {_FORMS}")


def policy_from_params(params: dict) -> Policy:
    """Inverse of :meth:`Policy.params`: a built-in kind, ``"Deadline"``, a calibrated kind,
    ``"LayerwiseQoS"``, ``"DES"``, or a plugin's ``"module:QualName"`` (imported as by
    :func:`policy_from_name`; :func:`~dmoe.policies.plugins.load_params`). A ``"spec"`` key,
    as in the policies of a run's ``summary.json``, is ignored.

    Raises:
        ValueError: ``params`` without a ``"policy"`` key, an unknown kind, or a plugin
        that does not load (as :func:`~dmoe.policies.plugins.load_spec`).
    """
    if not isinstance(params, dict) or "policy" not in params:
        raise ValueError("`params` must be a dict with a 'policy' key (see Policy.params())")
    kind = params["policy"]
    # "spec" sits beside params() in a run's summary.json; it is not a constructor argument
    args = {key: value for key, value in params.items() if key not in ("policy", "name", "spec")}
    if kind == "Deadline":
        return Deadline(policy_from_params(args["base"]), args["deadline_s"])
    classes = {"TopK": TopK, "Homogeneous": Homogeneous, "JESA": JESAPolicy, "LowerBound": LowerBound, "Dense": Dense,
               "DES": DESPolicy}
    if str(kind).startswith("Calibrated") and kind in {c._kind for c in CALIBRATED_KINDS.values()}:
        return calibrated_from_params(params)
    if kind == "LayerwiseQoS":
        return LayerwiseQoS(args.pop("thresholds"), args.pop("max_experts"), name=params.get("name"))
    if isinstance(kind, str) and ":" in kind:
        return load_params(kind, args)
    if kind not in classes:
        raise ValueError(f"unknown `policy` {kind!r}; known: {', '.join(classes)}, Deadline, LayerwiseQoS, "
                         "the calibrated kinds, or a plugin's 'module:Class'")
    return classes[kind](**args)


def policy_spec(policy: Policy) -> str | None:
    """The string :func:`policy_from_name` rebuilds ``policy`` from (``policy.spec``), or
    None (a class in ``__main__`` or a function, or an argument that is not a literal).

    Raises:
        TypeError: ``policy`` is not a :class:`~dmoe.policies.base.Policy`.
    """
    if not isinstance(policy, Policy):
        raise TypeError(f"`policy` must be a Policy, got {type(policy).__name__}")
    return policy.spec

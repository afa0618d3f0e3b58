"""Measure each window of layers' sensitivity to its QoS level (issue 11).

For a fixed calibration set (default: the routers' calibration subjects,
:data:`dmoe.data.CALIBRATION_SUBJECTS`, never the evaluation questions), each window of
layers w and each QoS level z_v:

1. run the model through :meth:`forward_masked` with the window's layers at level v and
   every other layer at the top level (``base="top"``, default) or full (``base="full"``:
   every expert for the carved model, :func:`full_selection`; for a real MoE the
   family's own routing as the full model chose it, ``native_selections``, exact before
   the window);
2. quality lost against the full model (``forward_masked(selection=None)``), over the
   scored tokens of the multiple-choice packing (:func:`dmoe.data.pack_question`): the
   mean KL(full || reduced) of the next-token distributions [nat/token], the increase of
   the answer NLL [nat] and the agreement of the chosen answer;
3. expected energy: at level v a token's experts are DES's choice (Algorithm 1,
   :func:`dmoe.optimize.select_experts`, threshold z_v, at most D experts) under per-token
   costs e_{s j} (eq 3-4, Section V-A) of its source node s, drawn like Algorithm 2's
   initial state: an i.i.d. Rayleigh channel draw per (question, layer)
   (:func:`dmoe.channels.rates.draw_rates`), one random distinct subcarrier per link
   (:func:`dmoe.optimize.random_subcarriers`), a uniformly random source node per
   question. The energy of a level is the mean over all tokens of the selected experts'
   costs, summed over the window's layers [J/token]. The same draws serve every level
   (common random numbers), so level differences are not channel noise. JESA's
   subsequent subcarrier optimisation lowers every level's communication cost; the
   allocation only needs the levels' relative costs.

Cost: ``num_questions x (W x (V - 1) + 2)`` forward passes with base ``"top"``
(``num_questions x (W x V + 1)`` with base ``"full"``), W windows, V levels. With the
defaults (30 layers, windows of 5, 5 levels, 16 questions): 16 x 26 = 416 passes, measured
in 9 min 3 s on the shared 2-core machine with 1 torch thread (8 questions: 4 min 31 s).
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from dmoe.channels.rates import draw_rates
from dmoe.energy import link_rate_from_subcarriers, token_costs
from dmoe.importance.cache import model_key
from dmoe.model.build import _threads
from dmoe.optimize import random_subcarriers, select_experts
from dmoe.optimize.qos_allocation import PROFILE_FORMAT, ImportanceProfile
from dmoe.system import SystemConfig

__all__ = [
    "DEFAULT_QOS_LEVELS",
    "DEFAULT_WINDOW",
    "DEFAULT_NUM_QUESTIONS",
    "calibrate_importance",
    "calibration_questions",
    "layer_windows",
    "full_selection",
    "level_costs",
]

DEFAULT_QOS_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 1.0)
DEFAULT_WINDOW = 5
DEFAULT_NUM_QUESTIONS = 16
#: What the layers outside the measured window run: ``"top"`` -- the highest QoS level
#: (the operating point of a sparse schedule; default), ``"full"`` -- the full model.
BASES = ("top", "full")


def calibration_questions(num_questions: int, subjects: Sequence[str] | None = None):
    """The first ``num_questions`` MMLU test questions of ``subjects`` (default
    :data:`dmoe.data.CALIBRATION_SUBJECTS`), round-robin over the subjects in the order of
    the test split -- the order of the routers' calibration set
    (:func:`dmoe.model.calibration.default_calibration_texts`).

    Raises:
        ValueError: ``num_questions`` < 1 or unknown subjects; warns when a subject is
        one the default experiments evaluate (medical subjects).
    """
    from dmoe.data import CALIBRATION_SUBJECTS, MEDICAL_SUBJECTS, load_mmlu, resolve_subjects

    if isinstance(num_questions, bool) or not isinstance(num_questions, int) or num_questions < 1:
        raise ValueError(f"`num_questions` must be a positive integer, got {num_questions!r}")
    names = list(CALIBRATION_SUBJECTS) if subjects is None else resolve_subjects(list(subjects))
    overlap = sorted(set(names) & set(MEDICAL_SUBJECTS))
    if overlap:
        warnings.warn(
            f"`subjects` {overlap} of the calibration set are evaluation subjects of the default experiments: "
            "results on them are optimistic for the calibrated policy",
            stacklevel=2,
        )
    per_subject = [load_mmlu(s) for s in names]
    out = []
    for i in range(max(len(q) for q in per_subject)):
        for qs in per_subject:
            if i < len(qs):
                out.append(qs[i])
                if len(out) == num_questions:
                    return out
    return out


def layer_windows(num_layers: int, window: int) -> list[tuple[int, int]]:
    """Consecutive 1-based ``(first, last)`` windows of ``window`` layers (the last may be shorter)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"`window` must be a positive integer, got {window!r}")
    if window > num_layers:
        raise ValueError(f"`window` = {window} exceeds the model's {num_layers} layers")
    return [(a, min(a + window - 1, num_layers)) for a in range(1, num_layers + 1, window)]


def full_selection(model, scores: torch.Tensor) -> torch.Tensor:
    """The full model's selection at a layer from its gate scores ``[S, K]``: every expert
    for a model without native routing (the carved default: exactly the dense FFN with
    ``combine="sum"``), the ``native_top_k`` highest scores otherwise."""
    k = getattr(model, "native_top_k", None)
    s, kk = scores.shape
    if k is None or int(k) >= kk:
        return torch.ones(s, kk, dtype=torch.bool, device=scores.device)
    idx = torch.topk(scores, int(k), dim=-1).indices
    return torch.zeros(s, kk, dtype=torch.bool, device=scores.device).scatter_(1, idx, True)


def level_costs(system: SystemConfig, num_questions: int, num_layers: int, seed: int):
    """Per-token costs of every expert for each (question, layer): ``[Q, L, K]`` [J/token],
    and the source node of each question ``[Q]`` (see module docstring, item 3)."""
    k, m = system.num_nodes, system.num_subcarriers
    source = np.random.default_rng([seed, 0x5EED]).integers(0, k, size=num_questions)
    costs = np.empty((num_questions, num_layers, k))
    for q in range(num_questions):
        for layer in range(num_layers):
            rng = np.random.default_rng([seed, q, layer])
            rates = draw_rates(system, rng)
            link = link_rate_from_subcarriers(rates, random_subcarriers(k, m, rng))
            costs[q, layer] = token_costs(link, system)[source[q]]
    return costs, source


def _is_moe(model, layer: int) -> bool:
    f = getattr(model, "is_moe_layer", None)
    return True if f is None else bool(f(layer))


def _check_levels(qos) -> tuple[float, ...]:
    try:
        levels = tuple(float(z) for z in qos)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`qos` must be a sequence of numbers in [0, 1], got {qos!r}") from exc
    if not levels or any(not (0.0 <= z <= 1.0) for z in levels) or len(set(levels)) != len(levels):
        raise ValueError(f"`qos` must be distinct numbers in [0, 1], got {qos!r}")
    return tuple(sorted(levels))


@torch.no_grad()
def calibrate_importance(
    model,
    *,
    qos: Sequence[float] = DEFAULT_QOS_LEVELS,
    max_experts: int = 2,
    window: int = DEFAULT_WINDOW,
    num_questions: int = DEFAULT_NUM_QUESTIONS,
    subjects: Sequence[str] | None = None,
    system: SystemConfig | None = None,
    seed: int = 0,
    base: str = "top",
    num_threads: int | None = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ImportanceProfile:
    """Measure the layer-importance profile of ``model`` (see module docstring).

    Args:
        model: an expert model (:class:`dmoe.model.MoEModel` or any implementation of the
            expert-model interface: ``forward_masked``, ``num_layers``, ``num_experts``,
            ``tokenizer``, ``metadata``).
        qos: the levels' thresholds z (distinct, in [0, 1]); sorted ascending.
        max_experts: D of every level (C2).
        window: layers per window (W = ceil(L / window) windows).
        num_questions: calibration questions (round-robin over ``subjects``).
        subjects: MMLU subjects of the calibration set (default the routers' calibration
            subjects; a warning when they overlap the evaluated medical subjects).
        system: radio and device parameters of the energy model (default
            :class:`SystemConfig` with K = model's K).
        seed: channel draws and source nodes.
        base: what the layers outside the window run (the point the profile linearises
            around): ``"top"`` (default) the highest level, so a window's loss is what
            lowering it from the top level costs while every layer is scheduled;
            ``"full"`` the full model. The tables hold increments over the base
            configuration (whose own KL/NLL/agreement to the full model are
            ``base_kl``, ``base_nll``, ``base_agreement``).
        num_threads: torch intra-op threads during the passes (default 1: on a shared
            2-core machine one thread is about 10x faster than two, which stall on
            OpenMP barriers when other processes keep the cores busy; None leaves it).
        progress: tqdm progress bar over the forward passes.
        log: callable for a one-line cost statement.

    Returns:
        :class:`~dmoe.optimize.qos_allocation.ImportanceProfile`.

    Raises:
        ValueError: bad ``qos``, ``max_experts``, ``window``, ``num_questions``,
        ``subjects``, or a ``system`` whose K differs from the model's.
    """
    from dmoe.data import pack_question

    levels = _check_levels(qos)
    if isinstance(max_experts, bool) or not isinstance(max_experts, int) or max_experts < 1:
        raise ValueError(f"`max_experts` must be a positive integer, got {max_experts!r}")
    L, K = int(model.num_layers), int(model.num_experts)
    system = system or SystemConfig(num_nodes=K)
    if system.num_nodes != K:
        raise ValueError(f"`system.num_nodes` ({system.num_nodes}) must equal the model's K = {K}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    if base not in BASES:
        raise ValueError(f"`base` must be one of {BASES}, got {base!r}")
    windows = layer_windows(L, window)
    questions = calibration_questions(num_questions, subjects)
    if model.tokenizer is None:
        raise ValueError("`model` has no tokenizer: calibration scores MMLU questions")
    packed = [pack_question(model.tokenizer, q) for q in questions]
    Q, W, V = len(packed), len(windows), len(levels)
    moe = np.array([_is_moe(model, layer) for layer in range(L)])
    costs, _ = level_costs(system, Q, L, seed)
    # base "top": the top level of a window is the base configuration itself (not re-run)
    passes = Q * (W * V + 1) if base == "full" else Q * (W * (V - 1) + 2)
    if log is not None:
        log(f"calibrating {L} layers in {W} windows of {window} x {V} QoS levels (D = {max_experts}, base "
            f"{base!r}) on {Q} questions ({sum(p.num_tokens for p in packed)} tokens): {passes} forward passes")
    start = time.perf_counter()
    with _threads(num_threads):
        tables = _measure_all(model, packed, windows, levels, costs, moe, base, max_experts, passes, progress)
    kl_q, dnll_q, agree_q, energy_sum, energy_full, scored, tokens, base_kl_q, base_dnll_q, base_agree_q = tables
    seconds = time.perf_counter() - start
    return _profile(model, questions, windows, levels, max_experts, window, seed, system, base, moe, passes, seconds,
                    kl_q, dnll_q, agree_q, energy_sum, energy_full, scored, tokens, base_kl_q, base_dnll_q,
                    base_agree_q)


def _measure_all(model, packed, windows, levels, costs, moe, base, max_experts, passes, progress):
    from dmoe.data import option_logliks

    L = int(model.num_layers)
    Q, W, V = len(packed), len(windows), len(levels)
    top = V - 1
    kl_q = np.zeros((W, V, Q))
    dnll_q = np.zeros((W, V, Q))
    agree_q = np.zeros((W, V, Q))
    energy_sum = np.zeros((W, V))
    energy_full = np.zeros(W)
    scored = np.zeros(Q)
    base_kl_q = np.zeros(Q)
    base_dnll_q = np.zeros(Q)
    base_agree_q = np.ones(Q)
    tokens = 0
    bar = tqdm(total=passes, desc="calibrating", unit="pass", disable=not progress)
    for qi, pq in enumerate(packed):
        kw = {"positions": pq.positions, "attention_mask": pq.attention_mask}
        ref = model.forward_masked(pq.input_ids, selection=None, **kw)[pq.score_rows]
        bar.update(1)
        ref_logp = torch.log_softmax(ref.double(), dim=-1)
        ref_p = ref_logp.exp()
        ref_ll = option_logliks(ref, pq).numpy()
        ref_nll, ref_pred = -ref_ll[pq.answer], int(np.argmax(ref_ll))
        n_tok = pq.num_tokens
        tokens += n_tok
        scored[qi] = pq.score_rows.numel()
        costs_q = costs[qi]
        # the full model's own routing ([L, S, K]) where the model exposes it (a real MoE): exact
        # for the layers before the window; after it, the choices the full model made on its inputs
        native = None
        if base == "full" and callable(getattr(model, "native_selections", None)):
            native = model.native_selections(pq.input_ids, **kw)

        def measure(rule):
            """(KL, NLL increase, agreement) of one pass with selection ``rule``."""
            out = model.forward_masked(pq.input_ids, selection=rule, **kw)[pq.score_rows]
            logp = torch.log_softmax(out.double(), dim=-1)
            kl_rows = (ref_p * (ref_logp - logp)).sum(-1)
            ll = option_logliks(out, pq).numpy()
            bar.update(1)
            return float(kl_rows.mean()), float(-ll[pq.answer] - ref_nll), float(int(np.argmax(ll)) == ref_pred)

        def make_rule(first, last, z, spent):
            """Selection rule: layers first..last (1-based) at threshold z, the rest at the base;
            ``spent[layer]`` accumulates the energy of the layers at threshold z."""

            def rule(layer, scores):
                inside = first - 1 <= layer <= last - 1
                if not moe[layer] or (not inside and base == "full"):
                    if native is not None:
                        return native[layer].to(device=scores.device, dtype=torch.bool)
                    return full_selection(model, scores)
                g = scores.detach().double().cpu().numpy()
                c = np.broadcast_to(costs_q[layer], g.shape)
                res = select_experts(g, c, z if inside else levels[top], max_experts)
                if inside:
                    spent[layer] += float(np.sum(np.where(res.selection, c, 0.0)))
                return torch.from_numpy(res.selection).to(scores.device)

            return rule

        if base == "top":
            # every layer at the top level: the base configuration, and each window's top-level energy
            base_spent = np.zeros(L)
            base_kl_q[qi], base_dnll_q[qi], base_agree_q[qi] = measure(make_rule(1, L, levels[top], base_spent))
        for wi, (first, last) in enumerate(windows):
            in_win = range(first - 1, last)
            energy_full[wi] += sum(costs_q[layer].sum() * n_tok for layer in in_win if moe[layer])
            for vi, z in enumerate(levels):
                if base == "top" and vi == top:  # the base configuration itself
                    kl_q[wi, vi, qi], dnll_q[wi, vi, qi], agree_q[wi, vi, qi] = (
                        base_kl_q[qi], base_dnll_q[qi], base_agree_q[qi])
                    energy_sum[wi, vi] += base_spent[first - 1 : last].sum()
                    continue
                spent = np.zeros(L)
                kl_q[wi, vi, qi], dnll_q[wi, vi, qi], agree_q[wi, vi, qi] = measure(make_rule(first, last, z, spent))
                energy_sum[wi, vi] += spent.sum()
    bar.close()
    return kl_q, dnll_q, agree_q, energy_sum, energy_full, scored, tokens, base_kl_q, base_dnll_q, base_agree_q


def _profile(model, questions, windows, levels, max_experts, window, seed, system, base, moe, passes, seconds,
             kl_q, dnll_q, agree_q, energy_sum, energy_full, scored, tokens, base_kl_q, base_dnll_q, base_agree_q):
    L, K, Q = int(model.num_layers), int(model.num_experts), len(questions)
    # pooled over scored tokens (each question weighted by its scored rows)
    wts = scored / scored.sum()
    # increments over the base configuration (zero base for "full")
    kl_q = kl_q - base_kl_q
    dnll_q = dnll_q - base_dnll_q
    kl = (kl_q * wts).sum(-1)
    se = lambda a: a.std(-1, ddof=1) / np.sqrt(Q) if Q > 1 else np.zeros(a.shape[:-1])  # noqa: E731
    meta = dict(getattr(model, "metadata", {}) or {})
    src = meta.get("source")
    name = src.get("name") if isinstance(src, dict) else (str(src) if src else type(model).__name__)
    return ImportanceProfile(
        model_key=model_key(model),
        model_name=str(name),
        num_layers=L,
        num_experts=K,
        max_experts=int(max_experts),
        qos=list(levels),
        windows=[list(w) for w in windows],
        kl=kl.tolist(),
        kl_se=se(kl_q).tolist(),
        nll=dnll_q.mean(-1).tolist(),
        nll_se=se(dnll_q).tolist(),
        agreement=agree_q.mean(-1).tolist(),
        base=base,
        base_kl=float((base_kl_q * wts).sum()),
        base_nll=float(base_dnll_q.mean()),
        base_agreement=float(base_agree_q.mean()),
        energy=(energy_sum / tokens).tolist(),
        energy_full=(energy_full / tokens).tolist(),
        moe_layers=[bool(x) for x in moe],
        config={
            "subjects": sorted({q.subject for q in questions}),
            "num_questions": Q,
            "questions": [[q.subject, q.index] for q in questions],
            "num_tokens": int(tokens),
            "num_scored_tokens": int(scored.sum()),
            "window": int(window),
            "seed": int(seed),
            "system": system.to_dict(),
            "combine": getattr(model, "combine", "sum"),
            "family": getattr(model, "family", "carved"),
            "passes": passes,
            "qos_levels": list(levels),
            "format": PROFILE_FORMAT,
        },
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        seconds=round(seconds, 2),
    )

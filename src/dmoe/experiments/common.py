"""Helpers shared by the real-model experiments (Fig. 5, 7-10, Table I)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from dmoe.experiments.base import Options
from dmoe.experiments.context import EvalRecord
from dmoe.experiments.stats import bootstrap_mean_interval, bootstrap_ratio_interval, wilson_interval

__all__ = [
    "FIG_SUBJECTS",
    "QUICK_FIG_LIMIT",
    "question_config",
    "policy_summary",
    "perplexity_summary",
    "md_table",
    "pct",
    "fmt",
    "statistics_line",
    "band",
    "early_late_ratio",
]

#: The paper's test set for the energy experiments (Section VII-A).
FIG_SUBJECTS: tuple[str, ...] = ("anatomy",)
#: Questions per subject in --quick mode for the anatomy figures (two rounds of 8 nodes).
QUICK_FIG_LIMIT = 16


def question_config(options: Options, *, default_subjects: Sequence[str] = FIG_SUBJECTS,
                    quick_limit: int | None = QUICK_FIG_LIMIT) -> dict:
    """``{"subjects": [...], "limit": n}`` from the options (overrides win)."""
    from dmoe.data import resolve_subjects

    subjects = resolve_subjects(list(options.subjects) if options.subjects else list(default_subjects))
    limit = options.limit if options.limit is not None else (quick_limit if options.quick else None)
    return {"subjects": list(subjects), "limit": limit}


def policy_summary(rec: EvalRecord, *, seed: int = 0, per_question: bool = True) -> dict:
    """The numbers an experiment keeps from one evaluation (JSON-ready)."""
    n = int(rec["num_questions"])
    k = int(round(rec["accuracy"] * n))
    acc_lo, acc_hi = wilson_interval(k, n)
    nll_lo, nll_hi = bootstrap_mean_interval(rec.nll, seed=seed)
    agree_lo, agree_hi = wilson_interval(int(round(rec["agreement"] * n)), n)
    kl_lo, kl_hi = bootstrap_ratio_interval(rec.kl * rec.scored, rec.scored, seed=seed)
    out = {
        "policy": rec["policy"],
        "params": rec["params"],
        "accuracy": rec["accuracy"],
        "accuracy_ci": [acc_lo, acc_hi],
        "mean_nll": rec["mean_nll"],
        "nll_ci": [nll_lo, nll_hi],
        "agreement": rec["agreement"],
        "agreement_ci": [agree_lo, agree_hi],
        "mean_kl": rec["mean_kl"],
        "kl_ci": [kl_lo, kl_hi],
        "energy_j": rec["energy_j"],
        "energy_comm_j": rec["energy_comm_j"],
        "energy_comp_j": rec["energy_comp_j"],
        "energy_per_token_j": rec.energy_per_token,
        "num_questions": n,
        "num_tokens": rec["num_tokens"],
        "channel_draws": rec["channel_draws"],
        "per_token_comm_j": rec.per_token("comm").tolist(),
        "per_token_comp_j": rec.per_token("comp").tolist(),
        "per_token_total_j": rec.per_token("total").tolist(),
        "infeasible_tokens": rec["per_layer"]["infeasible_tokens"],
        "expert_calls": rec["per_layer"]["expert_calls"],
        "seconds": rec["seconds"],
    }
    if per_question:
        out["correct"] = rec["correct"]
        out["nll"] = rec["nll"]
        out["subjects"] = rec["subjects"]
        out["agree"] = rec["agree"]
        out["kl"] = rec["kl"]
        out["scored"] = rec["scored"]
    return out


def perplexity_summary(ppl: dict, *, seed: int = 0) -> dict:
    """``{"perplexity", "perplexity_ci"}`` from a :meth:`Context.perplexity` record; the
    interval is the exponential of a 95% bootstrap over texts of the mean NLL per token."""
    lo, hi = bootstrap_ratio_interval(ppl["text_nll"], ppl["text_tokens"], seed=seed)
    return {"perplexity": ppl["perplexity"], "perplexity_ci": [math.exp(lo), math.exp(hi)]}


def md_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines)


def pct(x: float, digits: int = 1) -> str:
    """A fraction as a percentage string."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100.0 * x:.{digits}f}%"


def fmt(x: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def band(ci: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``[lo, hi]`` formatted."""
    return f"[{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def statistics_line(policies: Sequence[dict], *, full_model: bool = False) -> str:
    """How many questions, tokens and channel draws each point rests on (``full_model``:
    the experiment also reports agreement and KL with the full model)."""
    if not policies:
        return ""
    p = policies[0]
    return (
        f"Each point: {p['num_questions']} MMLU questions ({p['num_tokens']} tokens per layer, every option "
        f"of a question scored), energy averaged over {p['channel_draws']} independent i.i.d. Rayleigh channel "
        f"draws (a new draw per layer round, the same draws for every policy). "
        + ("Accuracy and agreement intervals: 95% Wilson; NLL and KL intervals: 95% bootstrap over questions; "
           if full_model else "Accuracy intervals: 95% Wilson; NLL intervals: 95% bootstrap over questions; ")
        + "differences between policies: paired bootstrap over questions."
    )


def early_late_ratio(values: Sequence[float], span: int = 5) -> float:
    """mean(last ``span`` values) / mean(first ``span`` values)."""
    v = np.asarray(values, dtype=np.float64)
    span = max(1, min(span, v.size // 2))
    first = v[:span].mean()
    return float(v[-span:].mean() / first) if first > 0 else float("nan")

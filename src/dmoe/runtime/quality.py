"""Quality measures that carry signal on any model: agreement with the full model, KL
divergence from it, and perplexity (issue 7, item 6).

*The full model* is the model's centralised forward with no expert removed,
``model.forward_masked(..., selection=None)``: the dense model for the carved default
(every FFN slice), the family's own top-k routing for a real MoE checkpoint. Its answers and
its next-token logits at the scored rows of every question are computed once per run
(:func:`full_reference`) and shared by all policies.

* **agreement** -- fraction of questions on which a policy picks the same option as the full
  model (options ranked by :func:`~dmoe.data.option_logliks`);
* **mean KL** -- KL(p_full || p_policy) [nat] of the next-token distribution, averaged over
  the scored tokens (``PackedQuery.score_rows``) of all questions (:func:`token_kl`);
* **perplexity** -- ``exp(sum of NLL / number of predicted tokens)`` over held-out texts
  (:func:`perplexity`, texts from :func:`dmoe.data.heldout_texts`).

All log-probabilities are taken with ``log_softmax`` in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..data.packing import PackedQuery, PackedText, option_logliks

__all__ = ["FullReference", "full_reference", "full_text_nll", "perplexity", "text_nll", "token_kl"]


@dataclass(frozen=True)
class FullReference:
    """The full model's outputs on a list of packed questions (one entry per question).

    Attributes
    ----------
    logits : tuple of Tensor [num_scored_q, vocab_size], float32
        Next-token logits at ``query.score_rows`` (as the model returns them). Memory:
        4 bytes x vocab_size per scored row (about 0.4 GB for the 135 anatomy questions
        at V = 49,152).
    logliks : ndarray [num_questions, 4], float64
        Log-likelihood of every option [nat].
    choices : ndarray [num_questions], int64
        The option the full model picks (argmax of ``logliks``).
    """

    logits: tuple[torch.Tensor, ...]
    logliks: np.ndarray
    choices: np.ndarray

    def __len__(self) -> int:
        return len(self.logits)

    def token_kl(self, index: int, policy_logits: torch.Tensor) -> torch.Tensor:
        """:func:`token_kl` of question ``index``'s full logits against ``policy_logits``
        ``[num_scored, vocab_size]``, bit for bit; the full side's float64 log-probabilities are
        computed once per question and kept while the whole reference's fit in
        :data:`LOG_PROB_CACHE_BYTES` (every policy of an experiment compares with them).

        Returns:
            Tensor [num_scored], float64 [nat]. Raises ValueError as :func:`token_kl`.
        """
        full = self.logits[index]
        if full.shape != policy_logits.shape or full.ndim != 2:
            return token_kl(full, policy_logits)  # raises the shape error
        cache = self.__dict__.setdefault("_log_probs", {})
        lp = cache.get(index)
        if lp is None:
            lp = _log_probs(full)
            if lp is None:
                raise ValueError("`full_logits` and `policy_logits` must be finite")
            if 8 * sum(t.numel() for t in self.logits) <= LOG_PROB_CACHE_BYTES:
                cache[index] = lp
        return _kl_from_log_probs(lp, full, policy_logits)

    def check(self, queries: Sequence[PackedQuery]) -> None:
        """Raise ``ValueError`` (naming `reference`) unless this reference fits ``queries``."""
        if len(self) != len(queries):
            raise ValueError(f"`reference` holds {len(self)} questions, but {len(queries)} are evaluated")
        for i, (lg, q) in enumerate(zip(self.logits, queries)):
            if lg.shape[0] != q.score_rows.numel():
                raise ValueError(
                    f"`reference` question {i} has {lg.shape[0]} scored rows, the query has {q.score_rows.numel()}"
                )


@torch.no_grad()
def full_reference(model, queries: Sequence[PackedQuery], *, progress: bool = False) -> FullReference:
    """Run the full model once over ``queries`` (centralised, ``selection=None``).

    Parameters
    ----------
    model : dmoe.model.MoEModel (any model with ``forward_masked``)
    queries : sequence of PackedQuery
    progress : bool
        Show a progress bar over the questions (``dmoe run`` does: on the default 135
        questions the pass takes about half a minute on 2 cores).

    Returns
    -------
    FullReference
    """
    from tqdm.auto import tqdm

    logits, logliks = [], np.zeros((len(queries), 4))
    for i, q in enumerate(tqdm(queries, desc="full model", unit="question", disable=not progress, leave=False)):
        lg = model.forward_masked(
            q.input_ids, positions=q.positions, attention_mask=q.attention_mask, selection=None
        )[q.score_rows.to(model.device)].float().cpu()
        logits.append(lg)
        logliks[i] = option_logliks(lg, q).numpy()
    return FullReference(tuple(logits), logliks, logliks.argmax(axis=1).astype(np.int64))


def token_kl(full_logits: torch.Tensor, policy_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_full || p_policy) of the next-token distribution, row by row.

    ``KL = sum_v p_full(v) (log p_full(v) - log p_policy(v))`` with both log-probabilities
    from ``log_softmax`` in float64 (stable for any logit scale); rows are clipped at 0
    from below (rounding can give -1e-17 where the distributions are equal).

    Parameters
    ----------
    full_logits, policy_logits : Tensor [N, vocab_size]

    Returns
    -------
    Tensor [N], float64 [nat]

    Raises
    ------
    ValueError
        If the shapes differ or a logit is not finite.
    """
    if full_logits.shape != policy_logits.shape or full_logits.ndim != 2:
        raise ValueError(
            f"`full_logits` and `policy_logits` must both be [N, V], got {tuple(full_logits.shape)} "
            f"and {tuple(policy_logits.shape)}"
        )
    lp = _log_probs(full_logits)
    if lp is None:
        raise ValueError("`full_logits` and `policy_logits` must be finite")
    return _kl_from_log_probs(lp, full_logits, policy_logits)


#: [byte] a :class:`FullReference` keeps its float64 log-probabilities (8 B x vocab_size per
#: scored row, 96 MB for the 16 questions of a quick reproduction) up to this size
LOG_PROB_CACHE_BYTES = 256 << 20

_NARROW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _log_probs(logits: torch.Tensor) -> torch.Tensor | None:
    """``log_softmax`` in float64 of ``[N, V]`` logits; None when one is not finite.

    For float32 / float16 / bfloat16 logits finiteness is checked on the (narrower) input: a
    finite input of those types always gives finite float64 log-probabilities (differences
    stay below 7e38 and the log-sum-exp lies in [0, log V]), and a non-finite one never does.
    """
    x = logits.detach()
    if x.dtype in _NARROW_FLOATS:
        if not bool(torch.isfinite(x).all()):
            return None
        return torch.log_softmax(x.double().cpu(), dim=-1)
    lp = torch.log_softmax(x.double().cpu(), dim=-1)
    return lp if bool(torch.isfinite(lp).all()) else None


def _kl_from_log_probs(lp: torch.Tensor, full_logits: torch.Tensor, policy_logits: torch.Tensor) -> torch.Tensor:
    """The rest of :func:`token_kl` given the full side's float64 log-probabilities ``lp``."""
    lq = _log_probs(policy_logits)
    if lq is None:
        raise ValueError("`full_logits` and `policy_logits` must be finite")
    return (lp.exp() * (lp - lq)).sum(dim=-1).clamp_min(0.0)


def text_nll(logits: torch.Tensor, text: PackedText) -> float:
    """Sum over the text's predicted tokens of ``-log p(token | earlier tokens)`` [nat].

    Parameters
    ----------
    logits : Tensor [seq_len - 1, vocab_size] (at ``text.score_rows``) or [seq_len, vocab_size]
    text : PackedText

    Returns
    -------
    float [nat]; divide by ``text.score_rows.numel()`` for the per-token NLL.
    """
    if logits.shape[0] == text.num_tokens:
        logits = logits[text.score_rows]
    if logits.shape[0] != text.score_rows.numel():
        raise ValueError(
            f"`logits` must have {text.score_rows.numel()} or {text.num_tokens} rows, got {tuple(logits.shape)}"
        )
    logp = torch.log_softmax(logits.detach().double().cpu(), dim=-1)
    return float(-logp.gather(1, text.score_targets[:, None])[:, 0].sum())


@torch.no_grad()
def full_text_nll(model, texts: Sequence[PackedText], *, progress: bool = False) -> np.ndarray:
    """The full model's NLL of each text (``forward_masked(selection=None)``).

    Parameters
    ----------
    progress : bool
        Show a progress bar over the texts (``dmoe run`` does: with the default 16 held-out
        texts this pass takes a few seconds before the policies start).

    Returns
    -------
    ndarray [num_texts], float64 [nat], summed over each text's predicted tokens.
    """
    from tqdm.auto import tqdm

    out = np.zeros(len(texts))
    bar = tqdm(texts, desc="full model ppl", unit="text", disable=not progress, leave=False)
    for i, t in enumerate(bar):
        lg = model.forward_masked(t.input_ids, positions=t.positions, attention_mask=t.attention_mask, selection=None)
        out[i] = text_nll(lg.float().cpu(), t)
    return out


def perplexity(nll_sums, token_counts) -> float:
    """Token-level perplexity ``exp(sum(nll_sums) / sum(token_counts))``.

    Parameters
    ----------
    nll_sums : array [num_texts], float [nat]
        NLL of each text summed over its predicted tokens.
    token_counts : array [num_texts], int
        Predicted tokens of each text.

    Returns
    -------
    float (>= 1)

    Raises
    ------
    ValueError
        If the arrays differ in length, there is no token, or an NLL is not finite.
    """
    nll = np.asarray(nll_sums, dtype=np.float64).ravel()
    n = np.asarray(token_counts, dtype=np.float64).ravel()
    if nll.shape != n.shape:
        raise ValueError(f"`nll_sums` and `token_counts` must have the same length, got {nll.size} and {n.size}")
    if n.sum() <= 0:
        raise ValueError("`token_counts` must sum to at least one token")
    if not np.all(np.isfinite(nll)):
        raise ValueError("`nll_sums` must be finite")
    return math.exp(float(nll.sum() / n.sum()))


def full_model_quality(reference: FullReference, questions, full_nll=None, texts: Sequence[PackedText] = ()) -> dict:
    """The full model's own scores, the baseline every policy is compared with.

    Parameters
    ----------
    reference : FullReference
        :func:`full_reference` of the packed ``questions``.
    questions : sequence of Question, non-empty
        The MMLU questions, in the order of ``reference``.
    full_nll : array [num_texts], float [nat], optional
        :func:`full_text_nll` of ``texts`` (None: no perplexity).
    texts : sequence of PackedText
        The held-out texts ``full_nll`` was computed on.

    Returns
    -------
    dict
        ``accuracy`` (fraction of ``questions`` answered right), ``mean_nll`` [nat] (mean
        NLL of the correct answer) and ``perplexity`` (over ``texts``; None without them).

    Raises
    ------
    ValueError
        From :func:`perplexity` (a non-finite NLL, no predicted token).
    """
    n = len(questions)
    return {
        "accuracy": float(sum(int(c == q.answer) for c, q in zip(reference.choices, questions)) / n),
        "mean_nll": float(-sum(reference.logliks[i, q.answer] for i, q in enumerate(questions)) / n),
        "perplexity": None if full_nll is None else perplexity(full_nll, [t.score_rows.numel() for t in texts]),
    }

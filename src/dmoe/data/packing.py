"""Pack one MMLU question with its four answers into one tree-shaped query.

The four candidate continuations share the question's context. Instead of four forward
passes over the same context, the query is one sequence ``[context | option A | ... |
option D]`` with explicit positions (every option continues at the context's length) and a
tree-shaped causal mask: context tokens see earlier context tokens, an option's tokens see
the whole context and earlier tokens of the same option only. With causal attention this
computes exactly the same hidden states as four separate passes (checked in the tests) at
about a third of the tokens, and it is what one expert node holds as "one query" in step 1
of the DMoE protocol (Section III-C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .mmlu import Question, format_prompt


@dataclass(frozen=True)
class PackedQuery:
    """A question packed as one tree-masked sequence.

    Attributes
    ----------
    input_ids : LongTensor [seq_len]
    positions : LongTensor [seq_len]
        Rotary position of each token (options restart at the context length).
    attention_mask : BoolTensor [seq_len, seq_len]
        ``True`` where the query token (row) may attend to the key token (column).
    context_len : int
    option_spans : tuple of (start, end)
        Half-open index range of each option's tokens within the packed sequence.
    score_rows : LongTensor [num_scored]
        Rows whose next-token logits are needed to score the options (the last context
        token and every option token but the last of each option).
    score_targets : LongTensor [num_scored]
        The token each of those rows must predict.
    score_option : LongTensor [num_scored]
        Which option (0-3) each scored row belongs to.
    answer : int
        Index of the correct option.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor
    context_len: int
    option_spans: tuple[tuple[int, int], ...]
    score_rows: torch.Tensor
    score_targets: torch.Tensor
    score_option: torch.Tensor
    answer: int

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


def _encode(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


def pack_question(tokenizer, question: Question) -> PackedQuery:
    """Tokenise and pack a question and its four choices (see module docstring).

    Parameters
    ----------
    tokenizer : a transformers tokenizer (callable returning ``input_ids``)
    question : Question

    Returns
    -------
    PackedQuery

    Raises
    ------
    ValueError
        If the context tokenises to nothing, or a choice is empty / whitespace-only or
        its text tokenises to nothing (it would otherwise be scored as a lone space).
    """
    context = _encode(tokenizer, format_prompt(question))
    if not context:
        raise ValueError("`question`: the prompt tokenised to zero tokens")
    options = []
    for k, choice in enumerate(question.choices):
        text = choice.strip()
        label = f"choice {'ABCD'[k] if k < 4 else k} ({choice!r})"
        if not text:
            # scored as " " + "" it would be a lone space token that can win
            raise ValueError(f"`question`: {label} is empty or whitespace-only; every choice needs text")
        if not _encode(tokenizer, text):
            raise ValueError(f"`question`: {label} tokenised to zero tokens")
        options.append(_encode(tokenizer, " " + text))
    return pack_continuations(context, options, answer=question.answer)


def pack_continuations(context: list[int], continuations: list[list[int]], *, answer: int = -1) -> PackedQuery:
    """Pack a context and its candidate continuations (token ids) into one tree-shaped query.

    The continuations all follow the context (module docstring); each is scored from the
    context's last token on, so :func:`option_logliks` gives log p(continuation | context)
    of each. :func:`pack_question` is this with an MMLU prompt and its four answers; the
    lm-evaluation-harness backend packs any request's continuations this way.

    Parameters
    ----------
    context : list of int, at least one token
    continuations : list of list of int, at least one, each at least one token
    answer : int
        Stored as ``PackedQuery.answer`` (-1: none).

    Returns
    -------
    PackedQuery

    Raises
    ------
    ValueError
        An empty context, no continuation, or an empty continuation.
    """
    if not context:
        raise ValueError("`context` must hold at least one token")
    if not continuations:
        raise ValueError("`continuations` must hold at least one continuation")
    if any(len(opt) == 0 for opt in continuations):
        raise ValueError("every continuation in `continuations` must hold at least one token")
    options = [list(opt) for opt in continuations]
    c = len(context)
    ids = list(context)
    positions = list(range(c))
    spans = []
    for opt in options:
        start = len(ids)
        ids.extend(opt)
        positions.extend(range(c, c + len(opt)))
        spans.append((start, len(ids)))
    seq_len = len(ids)
    # [seq_len, seq_len] tree-shaped causal mask
    idx = torch.arange(seq_len)
    mask = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    mask[:c, :c] = idx[:c, None] >= idx[None, :c]
    rows, targets, which = [], [], []
    for k, (start, end) in enumerate(spans):
        mask[start:end, :c] = True
        mask[start:end, start:end] = idx[start:end, None] >= idx[None, start:end]
        rows.extend([c - 1] + list(range(start, end - 1)))
        targets.extend(ids[start:end])
        which.extend([k] * (end - start))
    return PackedQuery(
        input_ids=torch.tensor(ids, dtype=torch.long),
        positions=torch.tensor(positions, dtype=torch.long),
        attention_mask=mask,
        context_len=c,
        option_spans=tuple(spans),
        score_rows=torch.tensor(rows, dtype=torch.long),
        score_targets=torch.tensor(targets, dtype=torch.long),
        score_option=torch.tensor(which, dtype=torch.long),
        answer=int(answer),
    )


def option_logliks(logits: torch.Tensor, packed: PackedQuery) -> torch.Tensor:
    """Log-likelihood of each option's text given the context.

    Parameters
    ----------
    logits : Tensor [num_scored, vocab_size] or [seq_len, vocab_size]
        Next-token logits, either for ``packed.score_rows`` only (in that order) or for
        the whole packed sequence.
    packed : PackedQuery

    Returns
    -------
    Tensor [num_options], float64
        Sum over the option's tokens of log p(token | context, earlier option tokens) [nat].
    """
    if logits.shape[0] == packed.num_tokens and packed.num_tokens != packed.score_rows.numel():
        logits = logits[packed.score_rows]
    if logits.shape[0] != packed.score_rows.numel():
        raise ValueError(
            f"`logits` must have {packed.score_rows.numel()} rows (score_rows) or "
            f"{packed.num_tokens} (the whole sequence), got {tuple(logits.shape)}"
        )
    logp = torch.log_softmax(logits.double(), dim=-1)
    # [num_scored] log-prob of each target token
    tok = logp.gather(1, packed.score_targets[:, None])[:, 0]
    out = torch.zeros(len(packed.option_spans), dtype=torch.float64)
    out.index_add_(0, packed.score_option, tok)
    return out


#: Held-out texts are cut to this many tokens [tokens] (bounds the cost of perplexity).
TEXT_MAX_TOKENS = 128


@dataclass(frozen=True)
class PackedText:
    """A plain text as one causal sequence whose every next token is scored (perplexity).

    It carries the attributes the runtime reads from a query (``input_ids``, ``positions``,
    ``attention_mask``, ``score_rows``), so :class:`~dmoe.runtime.DMoERuntime` serves it
    like a :class:`PackedQuery`.

    Attributes
    ----------
    input_ids : LongTensor [seq_len]
    positions : LongTensor [seq_len]
        ``0 .. seq_len-1``.
    attention_mask : BoolTensor [seq_len, seq_len]
        Causal (lower-triangular) mask.
    score_rows : LongTensor [seq_len - 1]
        ``0 .. seq_len-2``: every row but the last predicts the next token.
    score_targets : LongTensor [seq_len - 1]
        ``input_ids[1:]``.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor
    score_rows: torch.Tensor
    score_targets: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


def pack_text(tokenizer, text: str, *, max_tokens: int = TEXT_MAX_TOKENS) -> PackedText:
    """Tokenise ``text`` (no special tokens), keep its first ``max_tokens`` tokens.

    Parameters
    ----------
    tokenizer : a transformers tokenizer
    text : str
    max_tokens : int, >= 2

    Returns
    -------
    PackedText

    Raises
    ------
    ValueError
        If ``max_tokens`` < 2 or the text has fewer than 2 tokens (nothing to predict).
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise ValueError(f"`max_tokens` must be an integer >= 2, got {max_tokens!r}")
    ids = _encode(tokenizer, text)[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"`text` must tokenise to at least 2 tokens, got {len(ids)}")
    n = len(ids)
    idx = torch.arange(n)
    return PackedText(
        input_ids=torch.tensor(ids, dtype=torch.long),
        positions=idx.clone(),
        attention_mask=idx[:, None] >= idx[None, :],
        score_rows=idx[:-1].clone(),
        score_targets=torch.tensor(ids[1:], dtype=torch.long),
    )

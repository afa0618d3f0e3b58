"""Shared state of a reproduction run: output folder, the model (loaded once, lazily),
MMLU questions, the full model's reference outputs, and cached policy evaluations.

Policy evaluations on the real model are the expensive part, and several experiments
need the same ones (Top-2 appears in Fig. 7-10). :meth:`Context.evaluate` stores each
evaluation as ``DIR/cache/evals/<key>.json``; the key hashes the policy's parameters,
the exact questions, the seed, the system parameters, the channel model and the model's
build key. A rerun (or a resumed run after an interruption) reuses them. Perplexities on
held-out text (:meth:`Context.perplexity`) are cached the same way under
``DIR/cache/ppl/``. The full model's outputs (:func:`dmoe.runtime.full_reference`) are
computed once per question set, only when an evaluation is not in the cache.

With ``engine="ray"`` the runner first *plans* (:meth:`Context.plan`): it runs the
experiments against placeholder records to learn which evaluations they need, then
:meth:`Context.prefetch` runs the missing ones as parallel Ray tasks
(:mod:`dmoe.experiments.parallel`), writing each into the same cache as it finishes; the
experiments then run for real and find every evaluation cached (perplexities on
held-out text still run in order). The numbers are the same
as a local run's: a task runs exactly :func:`~dmoe.runtime.evaluate_policy` on the same
inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dmoe.system import SystemConfig

__all__ = ["Context", "EvalRecord", "to_jsonable", "write_json", "read_json"]

EVAL_FORMAT = 3  # 2: agreement and KL with the full model; 3: channel, CSI and latency


def to_jsonable(obj):
    """Recursively turn numpy scalars/arrays, tuples and Paths into JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        obj = float(obj)
    if isinstance(obj, float):
        # strict JSON (issue 20): NaN / +-inf are written as null ("not defined": an empty
        # group's mean, a correlation of constant data); readers treat null as missing
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, payload) -> None:
    """Write JSON atomically (temp file + rename) so an interrupted run leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(to_jsonable(payload), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path):
    """Read a JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(obj), sort_keys=True).encode()).hexdigest()[:20]


class EvalRecord(dict):
    """One policy's evaluation (a dict, stored as JSON). Keys:

    ``policy`` (label), ``params``, ``accuracy``, ``mean_nll`` [nat], ``energy_j``,
    ``energy_comm_j``, ``energy_comp_j`` [J], ``num_questions``, ``num_tokens``,
    ``channel_draws`` (independent channel realisations the energy averages over),
    ``per_layer`` (lists over layers: ``energy_comm_j``, ``energy_comp_j``, ``tokens``,
    ``expert_calls``, ``transmissions``, ``infeasible_tokens``, ``latency_mean_s``,
    ``latency_p95_s``), ``selection_counts`` ``[L][K]``, ``correct`` and ``nll`` per question,
    ``subjects`` per question, ``seconds``; against the full model: ``agreement`` and
    ``mean_kl`` [nat], and per question ``agree`` (0/1), ``kl`` (mean over its scored tokens
    [nat]) and ``scored`` (its scored tokens); the radio: ``channel`` (ChannelConfig dict),
    ``energy_planned_j``, ``failed_attempts``, ``dropped_tokens`` and the latency statistics
    ``latency_layer_round_mean_s``, ``latency_layer_round_p95_s``, ``latency_query_mean_s``,
    ``latency_query_p95_s`` [s], and ``latency_layer_round_s`` ``[num_rounds][num_layers]`` [s],
    the completion time of every layer round (absent from records cached by earlier versions:
    read it with ``.get``).
    """

    @property
    def agree(self) -> np.ndarray:
        return np.asarray(self["agree"], dtype=np.float64)

    @property
    def kl(self) -> np.ndarray:
        return np.asarray(self["kl"], dtype=np.float64)

    @property
    def scored(self) -> np.ndarray:
        return np.asarray(self["scored"], dtype=np.float64)

    @property
    def correct(self) -> np.ndarray:
        return np.asarray(self["correct"], dtype=np.float64)

    @property
    def nll(self) -> np.ndarray:
        return np.asarray(self["nll"], dtype=np.float64)

    def layer(self, key: str) -> np.ndarray:
        return np.asarray(self["per_layer"][key], dtype=np.float64)

    def per_token(self, component: str = "total") -> np.ndarray:
        """Energy per token at each layer [J/token]: ``comm``, ``comp`` or ``total``."""
        tokens = np.maximum(self.layer("tokens"), 1.0)
        comm, comp = self.layer("energy_comm_j"), self.layer("energy_comp_j")
        value = {"comm": comm, "comp": comp, "total": comm + comp}[component]
        return value / tokens

    @property
    def energy_per_token(self) -> float:
        """Total energy over all layers divided by the tokens of one layer [J/token]."""
        return float(self["energy_j"]) / max(int(self["num_tokens"]), 1)

    def subset(self, subject: str) -> dict:
        """Accuracy and NLL restricted to one subject's questions."""
        mask = np.asarray(self["subjects"]) == subject
        return {
            "n": int(mask.sum()),
            "accuracy": float(self.correct[mask].mean()) if mask.any() else float("nan"),
            "mean_nll": float(self.nll[mask].mean()) if mask.any() else float("nan"),
        }


class Context:
    """Output folder, lazily loaded model, question sets and the evaluation cache.

    Args:
        output: the report folder (``DIR``).
        model_source, cache_dir: passed to :func:`dmoe.model.load_moe_model`.
        progress: show progress bars of policy evaluations.
        log: callable for progress lines.
    """

    def __init__(self, output, *, model_source=None, cache_dir=None, progress: bool = True, log=print,
                 engine: str = "local", ray_address: str | None = None):
        if engine not in ("local", "ray"):
            raise ValueError(f"`engine` (--engine) must be 'local' or 'ray', got {engine!r}")
        self.engine = engine
        self.ray_address = ray_address
        self._planning: list | None = None
        self.output = Path(output)
        self.model_source = model_source
        self.cache_dir = cache_dir
        self.progress = progress
        self.log = log
        self._model = None
        self._other_models: dict = {}
        self._packed: dict = {}
        self._reference: dict = {}
        self._texts: dict = {}
        self.evaluations_run = 0
        self.evaluations_cached = 0
        self.model_load_seconds = 0.0
        #: seconds that the cached pieces reused by this run originally took to compute
        self.reused_seconds = 0.0

    # ------------------------------------------------------------------ model
    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def planning(self) -> bool:
        """True while :meth:`plan` runs an experiment against placeholder records (an
        experiment that derives later points from measured ones can skip those)."""
        return self._planning is not None

    def model(self, num_experts: int = 8):
        """The MoE model with ``num_experts`` experts per layer (loaded on first use; the
        default K = 8 is the paper's; other K are built/loaded on demand and kept)."""
        if num_experts != 8:
            if num_experts not in self._other_models:
                from dmoe.model import load_moe_model

                self.log(f"loading the MoE model with {num_experts} experts per layer ...")
                start = time.perf_counter()
                self._other_models[num_experts] = load_moe_model(
                    self.model_source, num_experts=num_experts, cache_dir=self.cache_dir, progress=self.progress
                )
                self.model_load_seconds += time.perf_counter() - start
            return self._other_models[num_experts]
        if self._model is None:
            from dmoe.model import load_moe_model

            self.log("loading the MoE model (SmolLM2-135M-Instruct split into K = 8 experts per layer) ...")
            start = time.perf_counter()
            self._model = load_moe_model(self.model_source, num_experts=8, cache_dir=self.cache_dir, progress=self.progress)
            self.model_load_seconds = time.perf_counter() - start
            self.log(f"model ready in {self.model_load_seconds:.1f} s")
        return self._model

    def model_info(self) -> dict:
        """JSON description of the loaded model (empty if none was loaded); with several
        granularities loaded (issue 12), ``"models"`` lists every one."""
        loaded = ([self._model] if self._model is not None else []) + [
            self._other_models[k] for k in sorted(self._other_models)
        ]
        if not loaded:
            return {}
        infos = [_describe_model(m) for m in loaded]
        info = dict(infos[0])
        if len(infos) > 1:
            info["models"] = infos
        return info

    # -------------------------------------------------------------- questions
    def questions(self, subjects: Sequence[str], limit: int | None):
        """MMLU questions of ``subjects`` (at most ``limit`` per subject)."""
        from dmoe.data import load_mmlu

        return load_mmlu(list(subjects), limit=limit)

    def packed(self, subjects: Sequence[str], limit: int | None):
        """(questions, packed queries) for the model's tokenizer, memoised."""
        key = (tuple(subjects), limit)
        if key not in self._packed:
            from dmoe.data import pack_question

            qs = self.questions(subjects, limit)
            # every granularity of the carved model shares the tokenizer: use a loaded one
            # rather than loading the K = 8 model only for it
            loaded = self._model or next(iter(self._other_models.values()), None)
            tok = (loaded if loaded is not None else self.model()).tokenizer
            self._packed[key] = (qs, [pack_question(tok, q) for q in qs])
        return self._packed[key]

    def reference(self, subjects: Sequence[str], limit: int | None, num_experts: int = 8):
        """The full model's outputs on the questions (:func:`dmoe.runtime.full_reference`), memoised
        (per model: ``num_experts`` experts per layer)."""
        key = (tuple(subjects), limit) if num_experts == 8 else (tuple(subjects), limit, num_experts)
        if key not in self._reference:
            from dmoe.runtime import full_reference

            self._reference[key] = full_reference((self.model() if num_experts == 8 else self.model(num_experts)), self.packed(subjects, limit)[1])
        return self._reference[key]

    def texts(self, exclude: Sequence[str], num_texts: int):
        """(subjects, packed held-out texts) for a run evaluating ``exclude``, memoised."""
        key = (tuple(exclude), int(num_texts))
        if key not in self._texts:
            from dmoe.data import heldout_texts, pack_text

            texts, subjects = heldout_texts(int(num_texts), exclude=list(exclude))
            tok = self.model().tokenizer
            self._texts[key] = (subjects, [pack_text(tok, t) for t in texts])
        return self._texts[key]

    def full_perplexity(self, *, exclude: Sequence[str], num_texts: int) -> float:
        """The full model's perplexity on the held-out texts (``selection=None``)."""
        from dmoe.runtime import full_text_nll, perplexity

        _, texts = self.texts(exclude, num_texts)
        return perplexity(full_text_nll(self.model(), texts), [t.score_rows.numel() for t in texts])

    # ------------------------------------------------------------- evaluation
    def perplexity(
        self,
        policy,
        *,
        exclude: Sequence[str],
        num_texts: int,
        seed: int,
        system: SystemConfig | None = None,
        channel_redraw: str = "layer",
        label: str = "",
    ) -> dict:
        """Perplexity of ``policy`` on ``num_texts`` held-out texts through the runtime, cached.

        Returns:
            ``{"perplexity", "text_nll" [num_texts] nat, "text_tokens" [num_texts],
            "subjects" [num_texts], "seconds"}``.
        """
        from dmoe.runtime import evaluate_perplexity, perplexity

        system = system or SystemConfig()
        model = self.model()
        key_inputs = {
            "format": EVAL_FORMAT,
            "policy": policy.params(),
            "exclude": list(exclude),
            "num_texts": int(num_texts),
            "seed": int(seed),
            "system": system.cache_dict(),  # the pre-rename key: cached evaluations stay valid
            "channel_redraw": channel_redraw,
            "model": (getattr(model, "metadata", {}) or {}).get("key", "unknown"),
            "combine": getattr(model, "combine", "sum"),
        }
        path = self.output / "cache" / "ppl" / f"{_hash(key_inputs)}.json"
        stored = read_json(path)
        if stored is not None and stored.get("key_inputs") == to_jsonable(key_inputs):
            self.reused_seconds += float(stored["record"].get("seconds", 0.0))
            return stored["record"]
        subjects, texts = self.texts(exclude, num_texts)
        if self._planning is not None:  # planning (engine="ray"): perplexities run in order later
            return {"perplexity": 1.0, "text_nll": [1.0] * len(texts), "text_tokens": [1] * len(texts),
                    "subjects": list(subjects), "seconds": 0.0}
        tag = f"[{label}] " if label else ""
        self.log(f"{tag}perplexity of {policy.name} on {len(texts)} held-out texts ...")
        start = time.perf_counter()
        nll, tokens = evaluate_perplexity(
            model, texts, policy, system=system, seed=int(seed), channel_redraw=channel_redraw
        )
        record = to_jsonable({
            "perplexity": perplexity(nll, tokens),
            "text_nll": nll,
            "text_tokens": tokens,
            "subjects": subjects,
            "seconds": round(time.perf_counter() - start, 2),
        })
        write_json(path, {"key_inputs": key_inputs, "record": record})
        return record

    def _model_for(self, num_experts: int = 8):
        """The carved model with ``num_experts`` experts per layer (the default K = 8: ``model()``)."""
        return self.model() if num_experts == 8 else self.model(num_experts)

    def _request(self, policy, subjects, limit, seed, system, channel_redraw, channel, num_experts=8, placement=None,
                 key_extra=None):
        """(key_inputs, cache path, questions, queries) of one evaluation; ``num_experts``,
        ``placement`` (issue 12) and ``key_extra`` enter the key."""
        model = self._model_for(num_experts)
        questions, queries = self.packed(subjects, limit)
        qids = [(q.subject, q.index) for q in questions]
        key_inputs = {
            "format": EVAL_FORMAT,
            "policy": policy.params(),
            "questions": _hash(qids),
            "num_questions": len(qids),
            "seed": int(seed),
            "system": system.cache_dict(),  # the pre-rename key: cached evaluations stay valid
            "channel_redraw": channel_redraw,
            "channel": channel.to_dict(),
            "model": (getattr(model, "metadata", {}) or {}).get("key", "unknown"),
            "combine": getattr(model, "combine", "sum"),
        }
        if placement is not None:
            key_inputs["placement"] = np.asarray(placement).tolist()
        if key_extra:
            key_inputs["extra"] = dict(key_extra)
        path = self.output / "cache" / "evals" / f"{_hash(key_inputs)}.json"
        return key_inputs, path, questions, queries

    def _stored(self, key_inputs, path):
        stored = read_json(path)
        if stored is not None and stored.get("key_inputs") == to_jsonable(key_inputs):
            return stored
        return None

    def evaluate(
        self,
        policy,
        *,
        subjects: Sequence[str],
        limit: int | None,
        seed: int,
        system: SystemConfig | None = None,
        channel_redraw: str = "layer",
        channel=None,
        label: str = "",
        num_experts: int = 8,
        placement=None,
        key_extra: dict | None = None,
    ) -> EvalRecord:
        """Evaluate ``policy`` on the questions, through the cache.

        ``num_experts`` selects the model (experts per layer); ``placement`` (``[E]`` or
        ``[L, E]`` node ids, with ``system.num_nodes`` = N nodes) places the experts
        when they outnumber the nodes (issue 12); both enter the cache key. ``key_extra``
        (a JSON-ready dict) enters the key too: what else the result depends on (e.g. which
        allocation the installed solvers offer), so that a changed value recomputes.

        Returns:
            :class:`EvalRecord` (while planning, a placeholder for an evaluation not yet cached).
        """
        from dmoe.channels import ChannelConfig
        from dmoe.runtime import evaluate_policy

        system = system or SystemConfig()
        channel = channel or ChannelConfig()
        key_inputs, path, questions, queries = self._request(
            policy, subjects, limit, seed, system, channel_redraw, channel, num_experts, placement, key_extra
        )
        stored = self._stored(key_inputs, path)
        if self._planning is not None:
            if stored is not None:
                return EvalRecord(stored["record"])
            self._planning.append(
                dict(policy=policy, subjects=list(subjects), limit=limit, seed=int(seed), system=system,
                     channel_redraw=channel_redraw, channel=channel, label=label, num_experts=num_experts,
                     placement=placement, key_extra=key_extra)
            )
            return _placeholder(policy, questions, self._model_for(num_experts))
        if stored is not None:
            self.evaluations_cached += 1
            self.reused_seconds += float(stored["record"].get("seconds", 0.0))
            return EvalRecord(stored["record"])
        tag = f"[{label}] " if label else ""
        self.log(f"{tag}evaluating {policy.name} on {len(queries)} questions ...")
        res = evaluate_policy(
            self._model_for(num_experts), queries, policy, system=system, seed=int(seed), channel_redraw=channel_redraw,
            channel=channel, progress=self.progress, reference=self.reference(subjects, limit, num_experts),
            placement=placement,
        )
        return self._store(res, policy, key_inputs, path, questions, system, channel_redraw, channel, tag)

    def _store(
        self, res, policy, key_inputs, path, questions, system, channel_redraw, channel, tag=""
    ) -> EvalRecord:
        n = len(questions)
        idx = np.arange(n)
        nll = -res.logliks[idx, res.answers]
        correct = (res.logliks.argmax(axis=1) == res.answers).astype(int)
        t = res.per_layer
        num_rounds = -(-n // system.num_nodes)
        # L layers of the evaluated model (the per-layer ledger has one row per layer)
        num_layers = len(t.energy_comm_j)
        draws = {"layer": num_rounds * num_layers, "round": num_rounds, "fixed": 1}[channel_redraw]
        if channel.speed_kmh is not None:
            draws = num_rounds  # independent starts; later layer rounds are correlated with them
        record = EvalRecord(
            policy=policy.name,
            params=policy.params(),
            accuracy=res.accuracy,
            mean_nll=res.mean_nll,
            energy_j=res.energy_j,
            energy_comm_j=res.energy_comm_j,
            energy_comp_j=res.energy_comp_j,
            num_questions=res.num_questions,
            num_tokens=res.num_tokens,
            channel_draws=draws,
            per_layer={
                "energy_comm_j": t.energy_comm_j,
                "energy_comp_j": t.energy_comp_j,
                "tokens": t.tokens,
                "expert_calls": t.expert_calls,
                "transmissions": t.transmissions,
                "infeasible_tokens": t.infeasible_tokens,
                "latency_mean_s": t.latency_mean_s,
                "latency_p95_s": t.latency_p95_s,
            },
            # [num_rounds, num_layers] completion time of every layer round [s] (deadline shares)
            latency_layer_round_s=(None if res.latency_layer_round_s is None
                                   else np.asarray(res.latency_layer_round_s, dtype=np.float64)),
            channel=channel.to_dict(),
            energy_planned_j=res.energy_planned_j,
            failed_attempts=res.failed_attempts,
            dropped_tokens=res.dropped_tokens,
            **res.latency_stats(),
            selection_counts=res.selection_counts,
            correct=correct,
            nll=nll,
            subjects=[q.subject for q in questions],
            seconds=round(res.seconds, 2),
            agreement=res.agreement,
            mean_kl=res.mean_kl,
            agree=(res.choices == res.full_choices).astype(int),
            kl=res.kl_per_question,
            scored=res.scored_tokens,
            # whatever the runtime records about deadlines (e.g. missed layer rounds), as is
            **{k: v for k, v in vars(res).items() if k.startswith("deadline")},
        )
        record = EvalRecord(to_jsonable(record))
        write_json(path, {"key_inputs": key_inputs, "record": record})
        self.evaluations_run += 1
        self.log(
            f"{tag}{policy.name}: accuracy {record['accuracy']:.3f}, mean NLL {record['mean_nll']:.2f}, "
            f"agreement {record['agreement']:.3f}, mean KL {record['mean_kl']:.3f}, "
            f"energy {record['energy_j']:.1f} J ({record['seconds']:.1f} s)"
        )
        return record

    # ------------------------------------------------------- parallel (Ray)
    def plan(self, run) -> list[dict]:
        """Run ``run()`` (an experiment against this context) with placeholder records and
        return the evaluations it asked for that are not cached yet. An experiment that
        cannot run on placeholders just plans fewer evaluations (they then run in order)."""
        self._planning = []
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - planning is best effort, the real run decides
            self.log(f"planning stopped early ({type(exc).__name__}: {exc}); the rest runs in order")
        finally:
            requests, self._planning = self._planning, None
        return requests

    def prefetch(self, requests: Sequence[dict]) -> int:
        """Run the not yet cached evaluations of ``requests`` as parallel Ray tasks and cache
        them (each as soon as it finishes, so an interrupted run resumes). Returns how many
        ran. With ``engine="local"`` it does nothing (the experiments evaluate in order)."""
        if self.engine != "ray" or not requests:
            return 0
        from dmoe.experiments.parallel import evaluate_on_ray

        jobs = {}
        for req in requests:
            if req.get("num_experts", 8) != 8:
                continue  # the Ray tasks share the default model; other granularities run in order
            key_inputs, path, questions, queries = self._request(
                req["policy"], req["subjects"], req["limit"], req["seed"], req["system"], req["channel_redraw"],
                req["channel"], 8, req.get("placement"), req.get("key_extra"),
            )
            if path in jobs or self._stored(key_inputs, path) is not None:
                continue
            jobs[path] = (req, key_inputs, questions, queries)
        if not jobs:
            return 0
        self.log(f"running {len(jobs)} policy evaluations as Ray tasks ...")

        def done(path, res):
            req, key_inputs, questions, _ = jobs[path]
            tag = f"[{req['label']}] " if req["label"] else ""
            self._store(res, req["policy"], key_inputs, path, questions, req["system"], req["channel_redraw"],
                        req["channel"], tag)

        tasks = [
            (path, queries, req["policy"],
             dict(system=req["system"], seed=req["seed"], channel_redraw=req["channel_redraw"], channel=req["channel"],
                  placement=req.get("placement")))
            for path, (req, _, _, queries) in jobs.items()
        ]
        evaluate_on_ray(self.model(), tasks, address=self.ray_address, on_done=done)
        return len(jobs)


def _describe_model(model) -> dict:
    """The build key, shape and combination rule of a loaded model (JSON)."""
    meta = dict(getattr(model, "metadata", {}) or {})
    keep = ("key", "source", "num_experts", "num_layers", "hidden_size", "intermediate_size",
            "mean_router_top2_overlap", "calibration_num_tokens", "created")
    info = {k: meta[k] for k in keep if k in meta}
    info["num_layers"] = int(model.num_layers)
    info["num_experts"] = int(model.num_experts)
    info["combine"] = getattr(model, "combine", "sum")
    return info


def _placeholder(policy, questions, model) -> EvalRecord:
    """A record shaped like a real one (every number 1 or 0.5), for planning only."""
    from dmoe.channels import ChannelConfig

    n, L, K = len(questions), int(model.num_layers), int(model.num_experts)
    ones = [1.0] * L
    return EvalRecord(
        policy=policy.name, params=policy.params(), accuracy=0.5, mean_nll=1.0, energy_j=1.0, energy_comm_j=0.5,
        energy_comp_j=0.5, num_questions=n, num_tokens=1, channel_draws=1,
        per_layer={"energy_comm_j": ones, "energy_comp_j": ones, "tokens": ones, "expert_calls": ones,
                   "transmissions": ones, "infeasible_tokens": [0.0] * L, "latency_mean_s": ones,
                   "latency_p95_s": ones},
        channel=ChannelConfig().to_dict(), energy_planned_j=1.0, failed_attempts=0, dropped_tokens=0,
        latency_layer_round_mean_s=1.0, latency_layer_round_p95_s=1.0, latency_query_mean_s=1.0,
        latency_query_p95_s=1.0,
        selection_counts=[[1] * K for _ in range(L)], correct=[i % 2 for i in range(n)], nll=[1.0] * n,
        subjects=[q.subject for q in questions], seconds=0.0, agreement=0.5, mean_kl=1.0,
        agree=[i % 2 for i in range(n)], kl=[1.0] * n, scored=[1] * n,
    )

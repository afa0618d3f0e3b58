"""Print the README's deployment results table from a `dmoe run` summary.json.

Regenerate the table of README "Deployments" (after any change to the radio, e.g. several
resource blocks per link):

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python -m dmoe run --system nr-fr1-30khz-100mhz \
        --layout disk:50 --limit 8 --ppl-texts 0 -o /tmp/dep_run --quiet
    python scripts/deployment_table.py /tmp/dep_run/summary.json

and paste the output over the table. Standard library only.
"""

from __future__ import annotations

import json
import math
import sys

#: (header, summary key, format)
COLUMNS = (
    ("policy", "policy", "{}"),
    ("energy [J/query]", "energy_per_query_j", "{:,.2f}"),
    ("energy [mJ/token]", "energy_per_token_mj", "{:,.1f}"),
    ("of it radio [mJ/query]", "radio_mj_per_query", "{:,.1f}"),
    ("query latency, mean [s]", "latency_query_mean_s", "{:,.1f}"),
    ("p95 [s]", "latency_query_p95_s", "{:,.1f}"),
    ("layer round, mean [s]", "latency_layer_round_mean_s", "{:.3f}"),
    ("mean NLL [nat]", "mean_nll", "{:.1f}"),
    ("mean KL [nat]", "mean_kl", "{:.2f}"),
    ("agreement", "agreement", "{:.3f}"),
)


def _cell(value, spec):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    text = spec.format(value)
    return "0.00" if text == "-0.00" else text


def table(summary: dict) -> str:
    """The markdown table (one row per policy) of a summary.json's ``results``."""
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = []
    for r in summary["results"]:
        r = dict(r, radio_mj_per_query=r["energy_comm_j"] / max(r["num_questions"], 1) * 1e3)
        rows.append("| " + " | ".join(_cell(r.get(key), spec) for _, key, spec in COLUMNS) + " |")
    return "\n".join([head, rule, *rows])


def caption(summary: dict) -> str:
    """One line: questions, tokens, nodes, preset, layout, s0."""
    cfg = summary["config"]
    r = summary["results"][0]
    dep = cfg.get("deployment") or {}
    chan = cfg.get("channel") or {}
    return (f"{r['num_questions']} questions ({r['num_tokens']} tokens per layer), K = {cfg['num_experts']} experts on "
            f"N = {cfg['num_nodes']} nodes, system {cfg.get('system_preset')}, layout {chan.get('layout')} "
            f"({chan.get('pathloss')}, path loss {dep.get('path_loss_db_min', float('nan')):.0f} / "
            f"{dep.get('path_loss_db_mean', float('nan')):.0f} / {dep.get('path_loss_db_max', float('nan')):.0f} dB, "
            f"{100 * dep.get('los_fraction', float('nan')):.0f}% of links LoS), s0 = {cfg['hidden_state_bytes']} B, "
            f"seed {cfg['seed']}")


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        summary = json.load(fh)
    print(caption(summary))
    print()
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

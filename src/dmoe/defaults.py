"""The default deployment of a run, shared by the library and the CLI (issue 19, item 4).

One home for the defaults that ``dmoe run``, ``dmoe calibrate``, ``dmoe build-model``,
:func:`dmoe.run_main_job`, :func:`dmoe.load_moe_model` (``dmoe.model.load_expert_model``),
:func:`dmoe.model.build_moe_model` and the deployment planner fall back on, so that the
library and the command line cannot drift apart (before issue 19 ``load_moe_model()`` built
K = 8 while ``dmoe run`` used K = 32).

* :data:`DEFAULT_NUM_EXPERTS` K = 32 fine-grained experts per layer of the carved default
  (SmolLM2-135M-Instruct). At the same active fraction (25 % of the FFN: Top-8 of 32 against
  Top-2 of 8) the finer split keeps more quality (``dmoe reproduce granularity``; README).
  The paper's K = 8 (Section VII-A) is asked for explicitly where the paper's experiments
  run (``dmoe reproduce``, ``-K 8``). A real MoE checkpoint always has its own K.
* :data:`DEFAULT_NUM_NODES` N = 8 nodes hold the 32 experts of a layer.
* :data:`DEFAULT_PLACEMENT` how they are placed (``dmoe reproduce placement``; README).

Pure constants: importing this module imports nothing (no torch).
"""

#: K, experts per layer of the carved default model (the paper's K = 8 is asked for explicitly)
DEFAULT_NUM_EXPERTS = 32
#: N, nodes of the carved default deployment
DEFAULT_NUM_NODES = 8
#: placement of the carved default's K experts on its N nodes
DEFAULT_PLACEMENT = "coactivation"

__all__ = ["DEFAULT_NUM_EXPERTS", "DEFAULT_NUM_NODES", "DEFAULT_PLACEMENT"]

"""From an expert selection to the radio: the per-node demand s_in and the subcarrier (or
resource-block) allocation that serves it, the two steps every selection-first policy
shares (Top-k, dense, the README's example).
"""

from __future__ import annotations

from dmoe.energy import link_token_counts
from dmoe.optimize.subcarrier import allocate_subcarriers
from dmoe.placement import node_selection

__all__ = ["node_demand", "allocate_links"]


def node_demand(selection, source, num_nodes: int, *, placement=None):
    """Tokens each node pair must carry: ``s[i, n]`` = tokens on node i that need node n.

    A token needs node n when it selected at least one expert held by n (one transmission
    serves all of a token's experts on a node, issue 12); with one expert per node this is
    s_ij of eq (3) / Algorithm 2.

    Args:
        selection: ``[num_tokens, num_experts], bool`` alpha.
        source: ``[num_tokens], int`` node of each token, in [0, num_nodes).
        num_nodes: N.
        placement: None (one expert per node: num_experts = N) or ``[num_experts], int``
            node of each expert.

    Returns:
        ``[N, N], int64`` s_in [tokens]; the diagonal counts tokens served at their own node
        (no transmission).

    Raises:
        ValueError: ``selection`` not 2-D, its width not N without a ``placement``, or
        ``source`` of the wrong length or outside [0, N).

    Source: the token counts s_ij of Section III / Algorithm 2; per node pair, issue 12.
    """
    if placement is None:
        return link_token_counts(selection, source, num_nodes)
    return link_token_counts(node_selection(selection, placement, num_nodes), source, num_nodes)


def allocate_links(rates, demand, system):
    """Subcarriers for the links with ``demand``: optimal P3(a) (at most one subcarrier
    per link, C3), or, with a per-node budget (``system.max_rbs_per_node``), the
    resource-block allocator without a deadline (one RB per link, at most B_i per node).

    Args:
        rates: ``[N, N, M], float64`` r_in^(m) [bit/s].
        demand: ``[N, N]`` tokens per link (:func:`node_demand`); the diagonal is ignored.
        system: :class:`~dmoe.system.SystemConfig` (P0 [W], s0 [bit], budget).

    Returns:
        :class:`~dmoe.optimize.subcarrier.SubcarrierResult` (or
        :class:`~dmoe.optimize.resource_blocks.ResourceBlockResult`): ``subcarrier`` ``[N,
        N], int64`` (-1 none), ``served`` / ``unserved`` ``[N, N], bool`` (an unserved
        active link found no free subcarrier with positive rate: its tokens must be
        rerouted), ``energy`` ``[N, N]`` [J].

    Raises:
        ValueError: malformed ``rates`` or ``demand`` (naming them).

    Source: Appendix B (P3(a) as an assignment problem); the per-node budget is
    :mod:`dmoe.optimize.resource_blocks`.
    """
    if system.max_rbs_per_node is None:
        return allocate_subcarriers(rates, demand, tx_power_w=system.tx_power_w, bits_per_token=system.bits_per_token)
    from dmoe.optimize.resource_blocks import allocate_resource_blocks

    return allocate_resource_blocks(
        rates, demand, tx_power_w=system.tx_power_w, bits_per_token=system.bits_per_token,
        max_rbs_per_node=system.max_rbs_per_node,
    )

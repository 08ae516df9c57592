r"""SPARRA: sparsity-informed spatial aggregation of radiology and pathology graphs.

Gao et al., MICCAI 2025, section 2 (equation numbers below are the paper's). One class
serves one modality or several: ``in_dims`` names them.

**Pooling module** (section 2.2), per modality m with its own weights:

.. math::
    H^{(0)} &= \mathrm{Dropout}(\mathrm{ReLU}(X_m W_m + c_m)) \\
    H^{(k)}, \mathbf{i}^{(k)} &= \mathrm{TopK}_{\rho, k_{min}}\big([H^{(k-1)} +]\,
        \mathrm{ReLU}(\mathrm{Conv}_k(H^{(k-1)}, A^{(k-1)}))\big), \quad k = 1, 2

with GCN convolutions (GIN or GAT selectable) and top-k pooling of ratio :math:`\rho`
(:mod:`radiopath.models.pooling`); :math:`f_{pool}(X_m) = H^{(2)}` holds the pooled nodes,
which are original nodes :math:`\mathbf{i}^{(1)}[\mathbf{i}^{(2)}]`. The paper's settings
(``conf/model/sparra_paper.yaml``) are ratio 0.2, PyG's linear score, no residual and
:math:`k_{min} = 1`; the default recipe (``conf/model/sparra.yaml``) adds the residual
:math:`H^{(k-1)} +` (``residual``: two GCN layers otherwise average a region of a few nodes
into its neighbours), a score that keeps nodes of either sign (``score="gated"`` or
``"abs"``) and a floor of kept nodes (``min_nodes``), chosen on the planted-signal
benchmark (``python -m radiopath.validate``).

**Importance and precision** (eqs. 3-4). A gated-attention network shared by all
modalities maps every pooled node to :math:`(\mu_s, \ln\sigma_s^2)` of
:math:`q(s \mid X) = \mathcal{N}(\mu_s, \sigma_s^2)`; eq. (4) gives
:math:`q(v \mid s) = \mathcal{G}(\alpha_v, \beta_v)` under the prior
:math:`\mathcal{NG}(\mu_0, \lambda_0, \alpha_0, \beta_0)`.

**Spatial regression** (section 2.2, "SPARA"). Node weight = inverse mean precision,
normalised over a group of pooled nodes:

.. math::
    \hat v_i = \frac{\beta_{v,i} / \alpha_{v,i}}{\sum_{j \in G(i)} \beta_{v,j} / \alpha_{v,j}}, \qquad
    \mathbf{x}_b = \big[\, \textstyle\sum_{i \in P_{b,m}} \hat v_i\, H^{(2)}_i \,\big]_m, \qquad
    \text{risk}_b = \boldsymbol\theta^\top \mathbf{x}_b

The paper defines :math:`v` over the pooled nodes of both modalities together
(:math:`v \in \mathbb{R}^{k^2(m_r+m_p)}`) but prints the normalisation with a modality
subscript, :math:`\hat v = v_r^{-1} / \|v_r^{-1}\|_1`. We default to the first reading,
``weight_norm="patient"``: :math:`G(i)` is all pooled nodes of the patient, every
modality together, so the weights sum to one per patient and a modality's block is
scaled by the share of importance its nodes carry. ``weight_norm="modality"`` takes the
second: weights sum to one per patient and modality. Both make the readout a weighted
*mean*, which cannot tell one abnormal region from four; ``weight_norm="size"`` (not in the
paper) divides :math:`\beta_{v,i}/\alpha_{v,i}` by the number of nodes of node i's graph
instead, so the block is a sum per node of the graph and grows with the amount of tissue
the weights pick out. A patient without modality m has a
zero block for m (node features are standardised on the training fold, so zero is the
training mean of the input; here it is simply "no evidence").

**Loss terms** (eqs. 6 and 8). With ``reduction="sum"`` (the paper) summed over each
patient's pooled nodes and averaged over the B patients of the batch:

.. math::
    \text{kl} &= \tau_{vi} \tfrac1B \textstyle\sum_i
        \mathbb{E}_{q(v)}\big[\mathrm{KL}(q(s_i \mid X) \,\|\, p(s_i \mid v_i))\big] \\
    \text{recon} &= \tau_{vi} \, \tau \, \tfrac1B \textstyle\sum_i \tfrac12
        \| x_i - D_m(\tilde s, A^{(2)})_i \|^2, \qquad
        \tilde s = \mu_s + \sigma_s \epsilon,\ \epsilon \sim \mathcal{N}(0, 1)

With ``reduction="mean"`` (the default recipe) :math:`\tfrac1B \sum_i` becomes the mean over
the batch's pooled nodes and :math:`\|\cdot\|^2` the mean over features: the sums grow with
the graphs (≈ 33 per patient against a Cox term of ≈ 3 on 300-node slides) and bury the
survival signal, the means do not.

``recon`` is :math:`-\ln p(X \mid s)` of eq. (6) up to a constant: a Gaussian with
precision :math:`\tau` (1e-3 in the paper, 1 in the recipe with per-feature means) on the
pooled nodes' input features :math:`x_i`, decoded from the reparameterised sample by a
per-modality graph decoder (Conv(1 → hidden) → ReLU → Linear(hidden → input width)).
Eq. (8) weights the variational terms by one, :math:`\tau_{vi} = 1` (section 3.1 gives no
other value); the recipe weights them by 0.1, which keeps the Cox term in charge. Eq. (8) keeps only the first term of eq. (3); ``gamma_kl=True`` adds the second,
:math:`\mathrm{KL}(q(v \mid s) \,\|\, p(v))`, to ``kl``. :math:`\beta_v` stays a function of
:math:`(\mu_s, \sigma_s^2)`, so gradients flow through eq. (4). In eval mode the decoder
gets :math:`\mu_s` and nothing is random.

**Node importance**: :math:`\hat v_i` written back through both top-k permutations onto
the original nodes; nodes dropped by pooling get 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool

from radiopath.errors import ConfigError, check_bool, check_choice, check_int, check_number
from radiopath.models.base import Aggregator, concat_blocks, patient_block
from radiopath.models.batch import PatientBatch
from radiopath.models.layers import CONVS, GatedAttention, feature_encoder, graph_conv
from radiopath.models.output import AggregatorOutput
from radiopath.models.pooling import TopKNodePooling
from radiopath.models.registry import AGGREGATORS
from radiopath.models.variational import expected_normal_kl, gamma_kl, gamma_posterior

WEIGHT_NORMS = ("patient", "modality", "size")
REDUCTIONS = ("mean", "sum")


class PoolingBranch(nn.Module):
    """One modality's encoder and two conv -> ReLU -> top-k pooling blocks."""

    def __init__(self, in_dim: int, hidden: int, dropout: float, conv: str, ratio: float,
                 min_nodes: int, score: str, residual: bool):
        super().__init__()
        self.residual = residual
        self.encoder = feature_encoder(in_dim, hidden, dropout)
        self.convs = nn.ModuleList([graph_conv(conv, hidden, hidden) for _ in range(2)])
        self.pools = nn.ModuleList(
            [TopKNodePooling(hidden, ratio=ratio, min_nodes=min_nodes, score=score) for _ in range(2)])

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pooled features, pooled edges, graph of each pooled node, its original node index."""
        h = self.encoder(x)
        nodes = torch.arange(x.size(0), device=x.device)
        for conv, pool in zip(self.convs, self.pools):
            h = h + conv(h, edge_index).relu() if self.residual else conv(h, edge_index).relu()
            h, edge_index, batch, perm = pool(h, edge_index, batch)
            nodes = nodes[perm]
        return h, edge_index, batch, nodes


class GraphDecoder(nn.Module):
    """Pooled nodes' input features from their importance sample: Conv(1 -> hidden) -> ReLU -> Linear."""

    def __init__(self, hidden: int, out_dim: int, conv: str):
        super().__init__()
        self.conv = graph_conv(conv, 1, hidden)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, s: Tensor, edge_index: Tensor) -> Tensor:
        return self.out(self.conv(s.unsqueeze(-1), edge_index).relu())

    def squared_error(self, s: Tensor, edge_index: Tensor, target: Tensor) -> Tensor:
        r"""Each node's :math:`\|x_i - D(s)_i\|^2` against ``target`` (N, D), without forming :math:`D(s)`.

        With :math:`r_i` the hidden activations and :math:`D(s)_i = W r_i + b`,

        .. math::
            \|x_i - W r_i - b\|^2 = \|x_i\|^2 - 2\,(W^\top x_i)\cdot r_i - 2\,b \cdot x_i
                + r_i^\top W^\top W r_i + 2\,(W^\top b) \cdot r_i + \|b\|^2,

        so only (N, hidden) products carry gradients: on 1024-wide node features the
        (N, D) decoded features and their error, forward and backward, cost more than the
        rest of the model.
        """
        r = self.conv(s.unsqueeze(-1), edge_index).relu()
        weight, bias = self.out.weight, self.out.bias  # (D, hidden), (D,)
        with torch.no_grad():
            target_norm = target.pow(2).sum(1)
        gram = weight.T @ weight
        return (target_norm - 2 * ((target @ weight) * r).sum(1) - 2 * (target @ bias)
                + ((r @ gram) * r).sum(1) + 2 * (r @ (weight.T @ bias)) + bias @ bias)


def per_modality_ratio(ratio: float | Mapping[str, float], modalities: list[str]) -> dict[str, float]:
    """Each modality's top-k ratio, a fraction in (0, 1]; :class:`ConfigError` names a bad one (``ratio.pathology``)."""
    if not isinstance(ratio, Mapping):
        check_number("ratio", ratio, "(0, 1]")
        return {m: ratio for m in modalities}
    missing = [m for m in modalities if m not in ratio]
    if missing:
        raise ConfigError("ratio", f"no ratio for {', '.join(missing)}: give one per modality or a single number")
    for m in modalities:
        check_number(f"ratio.{m}", ratio[m], "(0, 1]")
    return {m: ratio[m] for m in modalities}


@AGGREGATORS.register("sparra")
class SPARRAAggregator(Aggregator):
    """SPARRA for one or more modalities (see the module docstring for the equations).

    Settings are keyword-only, without defaults: ``conf/model/sparra.yaml`` (the recipe) and
    ``conf/model/sparra_paper.yaml`` (the paper) hold them. A bad one raises
    :class:`~radiopath.errors.ConfigError` naming it.

    Args:
        in_dims: modality -> node-feature width (key order = block order).
        hidden: encoder, convolution and decoder width; each modality block is this wide.
        attention_dim: width of the gated-attention branches of the (μ_s, ln σ_s²) head.
        dropout: dropout after each encoder (0.5, section 3.1).
        conv: ``"gcn"`` (paper), ``"gin"`` or ``"gat"``.
        ratio: top-k pooling ratio, the fraction of each graph's nodes a pooling keeps, in (0, 1]
            (1 keeps them all; 0.2 in the paper), or a dict modality -> ratio.
        min_nodes: each pooling keeps at least this many nodes of a graph (all of a smaller one).
        score: top-k score, ``"gated"`` or ``"abs"`` (keep nodes of either sign) or ``"linear"`` (PyG's TopKPooling).
        mu0, lambda0, alpha0, beta0: the Normal-Gamma prior (0, 1, 2, 1e-2 in the paper).
        tau_vi: weight of both variational terms (1: eq. 8 weights them by one).
        tau: precision of the Gaussian reconstruction likelihood (1e-3, eq. 6).
        weight_norm: ``"patient"`` or ``"modality"``: over which pooled nodes weights sum to one;
            ``"size"``: not normalised, divided by the size of the node's graph (keeps amount).
        gamma_kl: add the Gamma KL, the second term of eq. (3), to the ``kl`` term.
        reduction: ``"sum"`` (the paper: KL and reconstruction summed over each patient's pooled
            nodes, averaged over patients) or ``"mean"`` (averaged over pooled nodes, and the
            reconstruction over features too), which keeps the terms on the Cox loss's scale
            whatever the graph size.
    """

    def __init__(self, in_dims: dict[str, int], *, hidden: int, attention_dim: int, dropout: float, conv: str,
                 ratio: float | Mapping[str, float], min_nodes: int, score: str,
                 mu0: float, lambda0: float, alpha0: float, beta0: float, tau_vi: float, tau: float,
                 weight_norm: str, gamma_kl: bool, reduction: str, residual: bool):
        super().__init__(in_dims)
        check_int("hidden", hidden, minimum=1)
        check_int("attention_dim", attention_dim, minimum=1)
        check_number("dropout", dropout, "[0, 1)")
        check_choice("conv", conv, CONVS)
        check_number("mu0", mu0, "(-inf, inf)")
        for key, value in (("lambda0", lambda0), ("alpha0", alpha0), ("beta0", beta0)):
            check_number(key, value, "(0, inf)")  # parameters of the Normal-Gamma prior
        check_number("tau_vi", tau_vi, "[0, inf)")
        check_number("tau", tau, "[0, inf)")
        check_choice("weight_norm", weight_norm, WEIGHT_NORMS)
        check_choice("reduction", reduction, REDUCTIONS)
        check_bool("gamma_kl", gamma_kl)
        check_bool("residual", residual)
        ratios = per_modality_ratio(ratio, self.modalities)
        self.branches = nn.ModuleDict(
            {m: PoolingBranch(d, hidden, dropout, conv, ratios[m], min_nodes, score, residual)
             for m, d in self.in_dims.items()})
        self.importance_head = GatedAttention(hidden, attention_dim, out_dim=2)
        self.decoders = nn.ModuleDict({m: GraphDecoder(hidden, d, conv) for m, d in self.in_dims.items()})
        self.widths = {m: hidden for m in self.modalities}
        self.out_dim = hidden * len(self.modalities)
        # No bias: the Cox partial likelihood is blind to a shift of all risks.
        self.risk_head = nn.Linear(self.out_dim, 1, bias=False)
        self.prior = dict(mu0=mu0, lambda0=lambda0, alpha0=alpha0, beta0=beta0)
        self.tau_vi, self.tau = tau_vi, tau
        self.weight_norm, self.gamma_kl, self.reduction = weight_norm, gamma_kl, reduction

    def forward(self, batch: PatientBatch) -> AggregatorOutput:
        present = self.present(batch)
        pooled = {m: self.branches[m](batch.graphs[m].x, batch.graphs[m].edge_index, batch.graphs[m].batch)
                  for m in present}
        sizes = [pooled[m][0].size(0) for m in present]
        h = torch.cat([pooled[m][0] for m in present])
        patients = [batch.graphs[m].patient[pooled[m][2]] for m in present]
        # Weights sum to one over a group: the patient, or the patient's modality.
        if self.weight_norm == "modality":
            group = torch.cat([p * len(present) + i for i, p in enumerate(patients)])
            num_groups = batch.num_patients * len(present)
        else:
            group, num_groups = torch.cat(patients), batch.num_patients

        mu, log_var = self.importance_head(h).unbind(-1)
        var = log_var.exp()
        alpha_v, beta_v = gamma_posterior(mu, var, **self.prior)
        weight = beta_v / alpha_v
        if self.weight_norm == "size":
            # per node of the graph, not a share of the patient's: the readout keeps how much is abnormal
            nodes_in_graph = torch.cat([torch.bincount(batch.graphs[m].batch, minlength=batch.graphs[m].num_graphs)
                                        [pooled[m][2]] for m in present])
            weight = weight / nodes_in_graph
        else:
            weight = weight / weight.new_zeros(num_groups).index_add(0, group, weight)[group]

        s = mu + var.sqrt() * torch.randn_like(mu) if self.training else mu
        blocks, importance, recon = {}, {}, h.new_zeros(())
        for m, w, s_m in zip(present, weight.split(sizes), s.split(sizes)):
            g = batch.graphs[m]
            h_m, edge_index, graph, nodes = pooled[m]
            z = global_add_pool(w.unsqueeze(-1) * h_m, graph, size=g.num_graphs)
            blocks[m] = patient_block(z, g.patient, batch.num_patients)
            importance[m] = w.detach().new_zeros(g.num_nodes).index_copy(0, nodes, w.detach())
            error = 0.5 * self.decoders[m].squared_error(s_m, edge_index, g.x[nodes])
            recon = recon + (error / g.x.size(1) if self.reduction == "mean" else error).sum()

        kl = expected_normal_kl(mu, var, alpha_v, beta_v, self.prior["mu0"], self.prior["lambda0"])
        if self.gamma_kl:
            kl = kl + gamma_kl(alpha_v, beta_v, self.prior["alpha0"], self.prior["beta0"])
        vector = concat_blocks(blocks, self.widths, batch.num_patients)
        per = h.size(0) if self.reduction == "mean" else batch.num_patients
        loss_terms = {"kl": self.tau_vi * kl.sum() / per, "recon": self.tau_vi * self.tau * recon / per}
        return AggregatorOutput(risk=self.risk_head(vector).squeeze(-1), vector=vector,
                                loss_terms=loss_terms, node_importance=importance)

r"""Negative Cox partial log-likelihood, vectorised.

With log-risks :math:`r_i`, distinct event times :math:`t_g`, :math:`D_g` the
events at :math:`t_g` (:math:`d_g = |D_g|`) and the risk set
:math:`R_g = \{j : t_j \ge t_g\}`:

.. math::
    \text{Breslow:}\quad -\ell &= \sum_g \Big[ d_g \ln \sum_{j \in R_g} e^{r_j}
        - \sum_{i \in D_g} r_i \Big] \\
    \text{Efron:}\quad -\ell &= \sum_g \Big[ \sum_{l=0}^{d_g - 1}
        \ln \Big( \sum_{j \in R_g} e^{r_j} - \tfrac{l}{d_g} \sum_{j \in D_g} e^{r_j} \Big)
        - \sum_{i \in D_g} r_i \Big]

and the loss is :math:`-\ell / \sum_g d_g`. Risk sets come from one cumulative
log-sum-exp over the patients sorted by decreasing time, read at the last member of
each tie group; there is no loop over patients.
"""

from __future__ import annotations

import torch
from torch import Tensor

TIES = ("breslow", "efron")


def cox_partial_nll(risk: Tensor, time: Tensor, event: Tensor, ties: str = "breslow") -> Tensor:
    """Negative Cox partial log-likelihood averaged over events (see module docstring).

    ``risk``, ``time``, ``event`` are (B,); ``event`` is 1/True for an observed death.
    A batch without events returns ``risk.sum() * 0``: zero, no NaN, still in the graph.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    event = event.to(torch.bool)
    n_events = int(event.sum())
    if n_events == 0:
        return risk.sum() * 0

    order = torch.argsort(time, descending=True)
    risk, time, event = risk[order], time[order], event[order]
    starts = torch.ones_like(event)
    starts[1:] = time[1:] != time[:-1]
    group = torch.cumsum(starts, 0) - 1
    ends = torch.ones_like(event)
    ends[:-1] = starts[1:]
    last = ends.nonzero().squeeze(1)
    # log sum_{t_j >= t_g} exp(r_j): the running log-sum-exp at the last tied member.
    log_risk_set = torch.logcumsumexp(risk, 0)[last][group]

    event_risk = risk[event]
    log_denominator = log_risk_set[event]
    if ties == "efron":
        log_denominator = log_denominator + _efron_correction(event_risk, group[event], log_denominator, len(last))
    return (log_denominator - event_risk).sum() / n_events


def _efron_correction(event_risk: Tensor, event_group: Tensor, log_risk_set: Tensor, n_groups: int) -> Tensor:
    r""":math:`\ln(1 - \tfrac{l}{d_g} \sum_{D_g} e^{r} / \sum_{R_g} e^{r})` for the l-th event of each tie group."""
    d = torch.zeros(n_groups, dtype=event_risk.dtype, device=event_risk.device)
    d = d.index_add(0, event_group, torch.ones_like(event_risk))
    # Events arrive grouped (sorted by time), so rank = position - first position of the group.
    first = torch.cumsum(d, 0) - d
    rank = torch.arange(len(event_risk), device=event_risk.device, dtype=event_risk.dtype) - first[event_group]
    # Log-sum-exp of the tied events' risks, shifted by the group maximum for stability.
    shift = torch.full_like(d, -torch.inf).scatter_reduce(0, event_group, event_risk.detach(), "amax")
    tied = torch.zeros_like(d).index_add(0, event_group, (event_risk - shift[event_group]).exp())
    log_tied = tied.log()[event_group] + shift[event_group]
    return torch.log1p(-(rank / d[event_group]) * (log_tied - log_risk_set).exp())

"""cox_partial_nll against lifelines (Efron) and an explicit loop (Breslow)."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from radiopath.models.cox import cox_partial_nll


@pytest.fixture
def tied_cohort():
    """40 patients, rounded times (15 distinct, many ties, some between events and censorings)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    time = np.round(rng.exponential(np.exp(-0.7 * x)) * 5) + 1
    event = (rng.random(40) < 0.7).astype(int)
    return x, time, event


def breslow_loop(risk, time, event):
    """The textbook Breslow negative log partial likelihood, one risk set at a time."""
    total = risk.new_zeros(())
    for i in range(len(risk)):
        if event[i]:
            total = total - (risk[i] - torch.logsumexp(risk[time >= time[i]], 0))
    return total / event.sum()


def test_efron_matches_lifelines(tied_cohort):
    x, time, event = tied_cohort
    assert len(np.unique(time)) < len(time)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = CoxPHFitter().fit(pd.DataFrame({"x": x, "t": time, "e": event}), "t", "e")
    risk = torch.tensor(fitted.params_["x"] * x)
    nll = cox_partial_nll(risk, torch.tensor(time), torch.tensor(event), ties="efron")
    assert (-nll * event.sum()).item() == pytest.approx(fitted.log_likelihood_, rel=1e-9)


def test_breslow_matches_loop_value_and_gradient(tied_cohort):
    x, time, event = tied_cohort
    time, event = torch.tensor(time), torch.tensor(event)
    risk = torch.tensor(1.3 * x, requires_grad=True)
    fast = cox_partial_nll(risk, time, event)
    (grad_fast,) = torch.autograd.grad(fast, risk)
    slow = breslow_loop(risk, time, event)
    (grad_slow,) = torch.autograd.grad(slow, risk)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-12)
    torch.testing.assert_close(grad_fast, grad_slow)


def test_ties_matter_and_vanish_without_ties(tied_cohort):
    x, time, event = tied_cohort
    risk, event = torch.tensor(x), torch.tensor(event)
    tied = torch.tensor(time)
    assert cox_partial_nll(risk, tied, event, "efron") < cox_partial_nll(risk, tied, event, "breslow")
    distinct = tied + torch.arange(len(tied)) * 1e-3
    torch.testing.assert_close(cox_partial_nll(risk, distinct, event, "efron"),
                               cox_partial_nll(risk, distinct, event, "breslow"))


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_input_order_does_not_matter(tied_cohort, ties):
    x, time, event = (torch.tensor(a) for a in tied_cohort)
    shuffled = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(cox_partial_nll(x, time, event, ties),
                               cox_partial_nll(x[shuffled], time[shuffled], event[shuffled], ties))


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_all_censored_batch_is_zero_with_a_gradient(ties):
    risk = torch.randn(6, requires_grad=True)
    loss = cox_partial_nll(risk, torch.arange(1.0, 7.0), torch.zeros(6, dtype=torch.bool), ties)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(risk.grad, torch.zeros(6))


def test_unknown_ties_rejected():
    with pytest.raises(ValueError, match="ties"):
        cox_partial_nll(torch.zeros(2), torch.ones(2), torch.ones(2), ties="exact")

r"""Normal-Gamma variational terms of SPARRA (paper section 2.1, eqs. 3-4).

Prior: :math:`p(s, v) = \mathcal{N}(s \mid \mu_0, (\lambda_0 v)^{-1})\,\mathcal{G}(v \mid \alpha_0, \beta_0)`
(Gamma with shape :math:`\alpha` and rate :math:`\beta`), so the marginal :math:`p(s)` is a
Student's t: a long-tailed, sparsity-promoting prior on the importance :math:`s` of a node.
Variational posterior: :math:`q(s \mid X) = \mathcal{N}(\mu_s, \sigma_s^2)` and
:math:`q(v \mid s) = \mathcal{G}(\alpha_v, \beta_v)`, all element-wise over pooled nodes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gamma_posterior(mu: Tensor, var: Tensor, mu0: float = 0.0, lambda0: float = 1.0,
                    alpha0: float = 2.0, beta0: float = 1e-2) -> tuple[Tensor, Tensor]:
    r"""Closed-form :math:`q(v \mid s) = \mathcal{G}(\alpha_v, \beta_v)` of eq. (4).

    .. math::
        \alpha_v = 2\alpha_0 + 1, \qquad
        \beta_v = 2\beta_0 + \lambda_0 (\mu_s - \mu_0)^2 + \lambda_0 \sigma_s^2

    As printed in the paper. The coordinate-ascent optimum of eq. (3) is
    :math:`\mathcal{G}(\alpha_0 + \tfrac12, \beta_0 + \tfrac{\lambda_0}{2}[(\mu_s-\mu_0)^2 + \sigma_s^2])`;
    eq. (4) doubles shape and rate, which keeps the mean precision
    :math:`\alpha_v / \beta_v` (and so SPARRA's node weights) and halves its variance.
    Returns ``(alpha_v, beta_v)`` shaped like ``mu``.
    """
    beta = 2 * beta0 + lambda0 * ((mu - mu0) ** 2 + var)
    return torch.full_like(beta, 2 * alpha0 + 1), beta


def expected_normal_kl(mu: Tensor, var: Tensor, alpha_v: Tensor, beta_v: Tensor,
                       mu0: float = 0.0, lambda0: float = 1.0) -> Tensor:
    r"""First term of eq. (3): :math:`\mathbb{E}_{q(v)}[\mathrm{KL}(q(s \mid X) \,\|\, p(s \mid v))]`, element-wise.

    With :math:`\mathbb{E}[v] = \alpha_v / \beta_v` and
    :math:`\mathbb{E}[\ln v] = \psi(\alpha_v) - \ln \beta_v`:

    .. math::
        \tfrac12 \Big[ \lambda_0 \tfrac{\alpha_v}{\beta_v} \big(\sigma_s^2 + (\mu_s - \mu_0)^2\big)
        - \ln \lambda_0 - \psi(\alpha_v) + \ln \beta_v - \ln \sigma_s^2 - 1 \Big]
    """
    expected_v = alpha_v / beta_v
    expected_log_v = torch.digamma(alpha_v) - beta_v.log()
    return 0.5 * (lambda0 * expected_v * (var + (mu - mu0) ** 2)
                  - math.log(lambda0) - expected_log_v - var.log() - 1)


def gamma_kl(alpha_q: Tensor, beta_q: Tensor, alpha_p: float | Tensor, beta_p: float | Tensor) -> Tensor:
    r"""Second term of eq. (3) for given :math:`q(v)`: :math:`\mathrm{KL}(\mathcal{G}(\alpha_q, \beta_q) \,\|\, \mathcal{G}(\alpha_p, \beta_p))`.

    .. math::
        (\alpha_q - \alpha_p)\psi(\alpha_q) - \ln\Gamma(\alpha_q) + \ln\Gamma(\alpha_p)
        + \alpha_p(\ln\beta_q - \ln\beta_p) + \alpha_q \frac{\beta_p - \beta_q}{\beta_q}
    """
    alpha_p = torch.as_tensor(alpha_p, dtype=alpha_q.dtype, device=alpha_q.device)
    beta_p = torch.as_tensor(beta_p, dtype=alpha_q.dtype, device=alpha_q.device)
    return ((alpha_q - alpha_p) * torch.digamma(alpha_q) - torch.lgamma(alpha_q) + torch.lgamma(alpha_p)
            + alpha_p * (beta_q.log() - beta_p.log()) + alpha_q * (beta_p - beta_q) / beta_q)

"""MLP projection heads (RGCNN image/radiomics projectors, SimCLR head)."""

from __future__ import annotations

from torch import nn


class MLPProjector(nn.Sequential):
    r"""``num_layers`` linear layers with ReLU between them.

    .. math:: z = W_L\,\mathrm{ReLU}(\cdots \mathrm{ReLU}(W_1 y + b_1) \cdots) + b_L
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for index, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if index:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(d_in, d_out))
        super().__init__(*layers)

"""A mini-batch of patients: one ``torch_geometric`` ``Batch`` per modality.

A patient may lack a modality, so each modality batches only the patients that
have it; every graph carries ``patient``, its row in ``0..num_patients-1``, which
is how aggregators put per-graph results back into per-patient tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from radiopath.models.layers import GCNAdjacency, block_diagonal, gcn_adjacency

# (modality, one graph's node features, where to write them) -> None
NodeTransform = Callable[[str, Tensor, Tensor], None]


@dataclass
class PatientBatch:
    """Per-modality graph batches of ``num_patients`` patients.

    ``sources`` and ``cache`` (set by :func:`collate_patients` with a :class:`CollateCache`)
    let :meth:`adjacency` assemble a modality's GCN propagation matrix from the cached
    per-graph ones, only if a model asks for it.
    """

    graphs: dict[str, Batch]
    num_patients: int
    sources: dict[str, list[Data]] = field(default_factory=dict, repr=False)
    cache: CollateCache | None = field(default=None, repr=False)

    def to(self, device) -> "PatientBatch":
        """The same batch with every graph on ``device``."""
        return PatientBatch({m: g.to(device) for m, g in self.graphs.items()}, self.num_patients,
                            self.sources, self.cache)

    def adjacency(self, modality: str) -> GCNAdjacency | None:
        """The modality's GCN propagation matrix for :class:`~radiopath.models.layers.SparseGCNConv`.

        None without a cache or if a graph has self-loops; then pass ``edge_index`` instead.
        """
        if self.cache is None:
            return None
        parts = [self.cache.adjacency(g) for g in self.sources[modality]]
        if any(p is None for p in parts):
            return None
        return block_diagonal(parts).to(self.graphs[modality].x.device)


class CollateCache:
    """What collation reuses across the batches of one fold: feature buffers and each graph's GCN matrix.

    Buffers: collating a batch of large graphs otherwise allocates (and the kernel zero-fills
    page by page) hundreds of MB per step, so node features go into one tensor per modality,
    reused by every batch. A batch is valid until the next one overwrites it; autograd refuses
    a backward pass through overwritten features (version counter), so a misuse fails loudly.

    GCN matrices: the graphs are fixed, so each graph's normalised adjacency
    (:func:`~radiopath.models.layers.gcn_adjacency`) is computed on first use and kept.
    """

    def __init__(self):
        self._features: dict[str, Tensor] = {}
        self._adjacency: dict[int, tuple[Data, GCNAdjacency | None]] = {}

    def features(self, modality: str, rows: int, like: Tensor) -> Tensor:
        """A ``rows`` x ``like.shape[1:]`` view of the modality's buffer, grown if too small."""
        buffer = self._features.get(modality)
        if (buffer is None or buffer.size(0) < rows or buffer.shape[1:] != like.shape[1:]
                or buffer.dtype != like.dtype or buffer.device != like.device):
            # Head room: batches of the same size differ by a few graphs' nodes.
            buffer = like.new_empty((rows + rows // 8, *like.shape[1:]))
            self._features[modality] = buffer
        return buffer[:rows]

    def adjacency(self, graph: Data) -> GCNAdjacency | None:
        """``graph``'s GCN propagation matrix (None if it has self-loops), computed once.

        Unweighted, as the aggregators call their convolutions with ``edge_index`` only.
        """
        entry = self._adjacency.get(id(graph))
        if entry is None:
            # The graph is kept with its matrix, so its id cannot be reused by another graph.
            entry = graph, gcn_adjacency(graph.edge_index, graph.num_nodes, dtype=graph.x.dtype)
            self._adjacency[id(graph)] = entry
        return entry[1]


def collate_patients(patients: list[dict[str, Data]], *, transform: NodeTransform | None = None,
                     widths: Mapping[str, int] | None = None, cache: CollateCache | None = None) -> PatientBatch:
    """Batch patients given as ``modality -> Data`` maps (only the modalities each has).

    The input graphs are not modified: each is shallow-copied before ``patient``
    is attached, so tensors are shared, not duplicated. Node features are written once,
    graph by graph, into the batch's ``x``: by ``transform(modality, x, out)`` if given
    (e.g. standardisation), else copied; into ``cache``'s buffers if given, else a new
    tensor (of the graphs' dtype either way). ``widths`` gives the transform's output width
    per modality where it differs from the input's (e.g. principal components).
    """
    per_modality: dict[str, list[Data]] = {}
    sources: dict[str, list[Data]] = {}
    for row, graphs in enumerate(patients):
        for modality, graph in graphs.items():
            sources.setdefault(modality, []).append(graph)
            graph = copy.copy(graph)
            graph.num_nodes = graph.x.size(0)
            del graph.x  # written below, without torch.cat's extra copy
            graph.patient = torch.tensor([row], dtype=torch.long)
            per_modality.setdefault(modality, []).append(graph)
    batches = {}
    for modality, graphs in per_modality.items():
        batch = Batch.from_data_list(graphs)
        xs = [g.x for g in sources[modality]]
        rows, like = sum(x.size(0) for x in xs), xs[0]
        if widths is not None and widths.get(modality, like.size(1)) != like.size(1):
            like = like.new_empty((0, widths[modality]))
        x = cache.features(modality, rows, like) if cache is not None else like.new_empty((rows, *like.shape[1:]))
        start = 0
        for part in xs:
            out = x[start:start + part.size(0)]
            if transform is None:
                out.copy_(part)
            else:
                transform(modality, part, out)
            start += part.size(0)
        batch.x = x
        batches[modality] = batch
    return PatientBatch(batches, len(patients), sources, cache)

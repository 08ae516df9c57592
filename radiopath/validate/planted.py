r"""Planted-signal graph cohorts: graphs whose prognostic nodes are known.

Written straight in the graph format (``graphs/{modality}/{case_id}.pt``), no images, so a
cohort of 150 patients takes seconds. Each patient has a 2-D pathology graph and a 3-D CT
("radiology") graph; node features are

.. math::
    x_i = f(\mathbf p_i) + o + \varepsilon_i + \sum_{r \ni i} a_r\, \mathbf d_m, \qquad
    \varepsilon_i \sim \mathcal N(0, I), \quad o \sim \mathcal N(0, \sigma_o^2 I)

- :math:`f` is a smooth random field over the node positions :math:`\mathbf p_i` (random
  Fourier features, correlation length a third of the graph's radius, standard deviation
  ``field_sd`` per feature), drawn afresh for every graph: tissue that varies in space;
- :math:`o` is a patient offset (``offset_sd``): a batch effect shared by all nodes;
- a planted region :math:`r` is the ``k`` nodes nearest to a random node (compact in space);
  its nodes are shifted by :math:`a_r` along the cohort's unit direction :math:`\mathbf d_m`
  of modality :math:`m`. The shift is ``shift`` standard deviations of the node noise.

Survival: :math:`T \sim \mathrm{Exp}(h_0 e^{\beta z})` with the patient's standardised risk
:math:`z` (below), censoring :math:`C \sim \mathrm{Exp}(c\,h_0)`, observed
:math:`\min(T, C)` in days. ``beta`` (``log_hazard_scale``) sets how prognostic :math:`z`
is: with 1.0 the C-index of the true risk is about 0.7.

Families (``family=``), each a question a method must answer:

============== ======================================================================
shift          one region of ``region_fraction`` of the nodes per modality, shifted by
               a signed amplitude :math:`a = \pm U(1, 1.5)\cdot` ``shift``; the same
               :math:`a` in both modalities; :math:`z \propto a`. Both signs carry risk:
               a pooling that keeps only one sign loses half the patients.
count          0-4 small regions (``small_region_fraction`` each) per modality, fixed
               shift; :math:`z \propto` the number of regions of both modalities.
extent         one region per modality of :math:`U(1\%, 8\%)` of the nodes, fixed shift;
               :math:`z \propto` the summed extent.
one_modality   a signed region in pathology only; the CT graphs are field plus noise.
two_directions independent signed amplitudes per modality, each along its own direction;
               :math:`z \propto a_{path} + a_{rad}`: the risk needs both modalities.
null           regions planted as in ``shift`` but survival independent of them: a
               method must score a C-index of 0.5 here.
============== ======================================================================

Outputs in ``out_dir``: ``manifest.csv`` (``case_id, os_time, os_event``),
``graphs/{modality}/{case_id}.pt``, ``truth/{modality}/{case_id}.pt`` (bool per node:
planted), ``oracle.csv`` (``case_id, os_time, os_event`` and per modality the true
planted-node statistic :math:`\tfrac1n\sum_{i \in \text{planted}} x_i^\top \mathbf d_m`, the
planted-node mean scaled by their share, which is proportional to the amplitude, the
number of regions or the extent), ``cohort.json`` (every parameter).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from radiopath.graphs.edges import delaunay_edges
from radiopath.graphs.io import save_graph
from radiopath.io import atomic_torch_save, atomic_write_csv, atomic_write_text
from radiopath.layout import graph_path
from radiopath.modality import NAMES, modality

FAMILIES = ("shift", "count", "extent", "one_modality", "two_directions", "null")
# Node spacing: 256 µm tiles on a slide, ~4 mm patches in a CT volume.
_SPACING = {"pathology": 256.0, "radiology": 4.0}
_BASELINE_DAYS = 1000.0  # mean survival time at average risk


@dataclass(frozen=True)
class CohortSettings:
    """Sizes and signal strengths of a planted cohort (the keys of ``validate.cohort``)."""

    pathology_nodes: tuple[int, int] = (300, 5000)
    radiology_nodes: tuple[int, int] = (100, 1000)
    pathology_dim: int = 32
    radiology_dim: int = 16
    region_fraction: float = 0.05
    small_region_fraction: float = 0.02
    min_region_nodes: int = 5
    shift: float = 3.0
    field_sd: float = 0.7
    offset_sd: float = 0.3
    log_hazard_scale: float = 1.0
    censoring_rate: float = 0.5


@dataclass
class PlantedCohort:
    """Where a written cohort's files are."""

    root: Path
    manifest: Path
    graph_dir: Path
    truth_dir: Path
    oracle: Path
    modalities: list[str] = field(default_factory=lambda: list(NAMES))


def write_planted_cohort(out_dir: str | Path, *, family: str, n_patients: int, seed: int,
                         **sizes) -> PlantedCohort:
    """Write a planted-signal cohort of ``family`` (see the module docstring) to ``out_dir``.

    ``sizes`` override :class:`CohortSettings` fields; an unknown key or family is an error.
    The manifest is written last, so its presence marks a complete cohort.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown planted family {family!r}; choose one of {FAMILIES}")
    unknown = set(sizes) - set(CohortSettings.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown planted-cohort settings {sorted(unknown)}; known: "
                         f"{sorted(CohortSettings.__dataclass_fields__)}")
    settings = CohortSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})
    if n_patients < 10:
        raise ValueError(f"n_patients={n_patients}: a planted cohort needs at least 10 patients")
    root = Path(out_dir)
    rng = np.random.default_rng(seed)
    directions = {m: _unit(rng.normal(size=_setting(settings, m, "dim"))) for m in NAMES}
    rows, oracle_rows, latents = [], [], []
    for i in range(n_patients):
        case_id = f"{family}-{i:04d}"
        regions = _patient_regions(family, settings, rng)
        stats = {}
        for name in NAMES:
            graph, planted = _graph(name, regions[name], directions[name], settings, rng)
            graph.case_id = case_id
            save_graph(graph, graph_path(root / "graphs", name, case_id))
            atomic_torch_save(torch.from_numpy(planted), truth_path(root / "truth", name, case_id))
            projection = graph.x.numpy() @ directions[name]
            stats[f"oracle_{name}"] = float(projection[planted].sum() / len(planted))
        latents.append(regions["latent"])
        rows.append({"case_id": case_id})
        oracle_rows.append(stats)
    latent = np.asarray(latents, dtype=float)
    z = (latent - latent.mean()) / (latent.std() or 1.0)
    if family == "null":
        z = rng.permutation(z)  # same distribution of risks, unrelated to the graphs
    hazard = np.exp(settings.log_hazard_scale * z)
    event_time = rng.exponential(_BASELINE_DAYS / hazard)
    censor_time = rng.exponential(_BASELINE_DAYS / settings.censoring_rate, size=n_patients)
    survival = pd.DataFrame(rows)
    survival["os_time"] = np.maximum(np.minimum(event_time, censor_time), 1.0).round(1)
    survival["os_event"] = (event_time <= censor_time).astype(int)

    oracle = pd.concat([survival, pd.DataFrame(oracle_rows)], axis=1)
    atomic_write_csv(oracle, root / "oracle.csv")
    atomic_write_text(json.dumps({"family": family, "n_patients": n_patients, "seed": seed,
                                  "settings": asdict(settings)}, indent=2) + "\n", root / "cohort.json")
    atomic_write_csv(survival, root / "manifest.csv")
    return PlantedCohort(root, root / "manifest.csv", root / "graphs", root / "truth", root / "oracle.csv")


def truth_path(truth_dir: str | Path, name: str, case_id: str) -> Path:
    """The planted-node truth of one case's graph of modality ``name`` (bool per node)."""
    return Path(truth_dir) / name / f"{case_id}.pt"


def _setting(settings: CohortSettings, name: str, key: str):
    """A per-modality setting: ``pathology_dim`` for ``("pathology", "dim")``."""
    return getattr(settings, f"{name}_{key}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _signed_amplitude(settings: CohortSettings, rng: np.random.Generator) -> float:
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 1.5) * settings.shift)


def _patient_regions(family: str, s: CohortSettings, rng: np.random.Generator) -> dict:
    """Per modality a list of (fraction of nodes, amplitude) regions, and the latent risk."""
    if family in ("shift", "null"):
        a = _signed_amplitude(s, rng)
        return {"pathology": [(s.region_fraction, a)], "radiology": [(s.region_fraction, a)], "latent": a}
    if family == "one_modality":
        a = _signed_amplitude(s, rng)
        return {"pathology": [(s.region_fraction, a)], "radiology": [], "latent": a}
    if family == "two_directions":
        a_path, a_rad = _signed_amplitude(s, rng), _signed_amplitude(s, rng)
        return {"pathology": [(s.region_fraction, a_path)], "radiology": [(s.region_fraction, a_rad)],
                "latent": a_path + a_rad}
    if family == "count":
        counts = {m: int(rng.integers(0, 5)) for m in NAMES}
        regions = {m: [(s.small_region_fraction, s.shift)] * c for m, c in counts.items()}
        return {**regions, "latent": sum(counts.values())}
    extents = {m: float(rng.uniform(0.01, 0.08)) for m in NAMES}  # extent
    return {**{m: [(f, s.shift)] for m, f in extents.items()}, "latent": sum(extents.values())}


def _graph(name: str, regions: list[tuple[float, float]], direction: np.ndarray,
           s: CohortSettings, rng: np.random.Generator) -> tuple[Data, np.ndarray]:
    """One graph: positions, Delaunay edges, field + offset + noise + planted regions."""
    low, high = _setting(s, name, "nodes")
    n = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    dims, spacing, width = modality(name).dims, _SPACING[name], _setting(s, name, "dim")
    radius = spacing * (n / _unit_ball_volume(dims)) ** (1 / dims)
    pos = _uniform_in_ball(n, dims, rng) * radius

    # Smooth field: random Fourier features with a correlation length of radius / 3.
    components = 16
    omega = rng.normal(scale=3.0 / radius, size=(dims, components))
    phase = rng.uniform(0, 2 * math.pi, size=components)
    basis = np.cos(pos @ omega + phase) * math.sqrt(2.0 / components)
    x = basis @ rng.normal(scale=s.field_sd, size=(components, width))
    x += rng.normal(scale=s.offset_sd, size=width)
    x += rng.normal(size=(n, width))

    planted = np.zeros(n, dtype=bool)
    for fraction, amplitude in regions:
        size = min(n, max(s.min_region_nodes, int(round(fraction * n))))
        centre = pos[rng.integers(n)]
        nearest = np.argsort(np.linalg.norm(pos - centre, axis=1))[:size]
        x[nearest] += amplitude * direction
        planted[nearest] = True
    graph = Data(x=torch.from_numpy(x.astype(np.float32)),
                 edge_index=torch.from_numpy(delaunay_edges(pos, max_length=3 * spacing)),
                 pos=torch.from_numpy(pos.astype(np.float32)),
                 assignment=torch.arange(n), modality=name, encoder="planted")
    return graph, planted


def _unit_ball_volume(dims: int) -> float:
    return math.pi ** (dims / 2) / math.gamma(dims / 2 + 1)


def _uniform_in_ball(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=(n, dims))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * rng.uniform(size=(n, 1)) ** (1 / dims)

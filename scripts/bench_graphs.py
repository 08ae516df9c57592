r"""Benchmark radiopath's slide-graph builder against tiatoolbox's SlideGraph+ reference.

Run with the project venv::

    .venv/bin/python scripts/bench_graphs.py                 # default sizes
    .venv/bin/python scripts/bench_graphs.py --quick         # smoke run, a minute or so
    .venv/bin/python scripts/bench_graphs.py --profile --output scripts/bench_graphs_results.md

The reference, tiatoolbox 2.1.3, lives in its own venv (``.venv-bench``, made by
``scripts/setup_bench_env.sh``): it must never enter the project venv. When that venv
is missing, only radiopath is measured.

What is measured
----------------
Each build runs in a fresh subprocess (this script re-invoked with ``--worker``):
radiopath builds under the project interpreter (``.venv/bin/python``), tiatoolbox builds
under ``.venv-bench/bin/python``. Both read the same inputs from temporary ``.npy``
files (float32 features, float32 level-0 top-left patch coordinates). The time is the
wall-clock time of one call -- ``radiopath.graphs.build.build_graph`` (clustering, node
means, Delaunay edges) or ``SlideGraphConstructor.build`` (clustering, node means,
Delaunay adjacency and edge index) -- after imports and loading. Peak memory is the
worker's ``getrusage(RUSAGE_SELF).ru_maxrss``: the whole process, with the interpreter,
torch (both import it), the loaded features and the build; nothing is subtracted. The
features' own size and the RSS just before the build are reported beside it so a
reader can see what the build itself adds. GB = 1e9 bytes.

Synthetic slides
----------------
Patches are 256 x 256 px tiles at 0.5 um/px (20x) on a regular grid, kept inside a
tissue-shaped region (a union of 3-5 random ellipses with a wavy boundary; the N
tiles deepest inside the shape are kept, in row-major tiling order). Features are a
smooth spatial field -- 16 latent channels, each ``tanh`` of a sum of plane waves with
wavelengths of 0.4-4 mm, giving plateaus ("tissue compartments") with soft borders --
mixed into D dimensions by a random Gaussian projection (per-dimension std
``--field-std``), plus a random per-dimension offset (``--offset-std``, real embeddings
are not centred) and i.i.d. Gaussian noise (``--noise-std``). The output prints the
feature distances this gives between adjacent tiles and between tiles one search
radius apart, i.e. how much the feature term f = exp(-lambda_f ||dx||) varies.

Parameters: the DESIGN.md WSI defaults. tiatoolbox gets patch centres in 20x pixels
with lambda_d 3e-3 /px, lambda_f 1e-3, lambda_h 0.8, neighbour_search_radius 2000 px,
connectivity_distance 4000 px. radiopath gets the same geometry in um
(``build_graph`` turns coords into centres ``(coords + 128) * 0.5``): radius 1000 um,
connectivity 2000 um, lambda_d 6e-3 /um, lambda_f 1e-3, lambda_h 0.8. The grid pitch
(256 px) never puts a pair exactly on the radius.

What tiatoolbox 2.1.3 does (read from its installed ``tiatoolbox/tools/graph.py``)
----------------------------------------------------------------------------------
* Features: no scaling or normalisation. ``feature_range_thresh`` (default 1e-4) only
  *drops* feature columns whose range (max - min over patches) is <= the threshold;
  the rest are used as given (raw Euclidean distance, in the input dtype: float32
  here). The synthetic features have no such column (checked in the worker and
  reported as ``dropped cols``), so both builders see exactly the same feature
  vectors. The column selection is a boolean-index copy of the feature matrix even
  when nothing is dropped (it counts in tiatoolbox's peak memory).
* Neighbours: ``cKDTree.query(points, k=len(points))``, i.e. *every* point's distance to
  *every* other point, sorted (two dense N x N arrays, float64 + int64, copied once
  more by ``np.array``: ~32 N^2 bytes at the peak), then for each point (a Python loop)
  the neighbours with distance *strictly* below ``neighbour_search_radius`` get
  ``1 - f*d``, all others 1, written into the N(N-1)/2 condensed matrix; then
  ``scipy.cluster.hierarchy.linkage(method="average")`` and
  ``fcluster(t=lambda_h, criterion="distance")``. radiopath's pair radius is strict too.
* Nodes: mean position (rounded to integer pixels) and mean feature of each cluster;
  edges: Delaunay triangulation of the node positions, keeping edges of length
  <= ``connectivity_distance`` (``cKDTree.query_ball_point``), via a dense
  nodes x nodes adjacency matrix; the edge index holds both directions. radiopath uses
  the unrounded means and also stores both directions, so edge counts are comparable.
* The returned dict has ``x``, ``edge_index`` and ``coordinates`` only -- no per-patch
  cluster labels. The worker wraps ``scipy.cluster.hierarchy.fcluster`` (which
  ``build`` calls once, through the module attribute) with a function that keeps a
  reference to its result: no recomputation, negligible overhead, timing unaffected.

Caveats: tiatoolbox's loop is single-threaded numpy/scipy; radiopath uses torch with
``--threads`` threads (default 1, build_graphs' ``graph_threads``). Both peaks include a torch
import (tiatoolbox also imports umap/matplotlib at module load).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROJECT_PY = REPO / ".venv" / "bin" / "python"
BENCH_PY = REPO / ".venv-bench" / "bin" / "python"

PATCH_PX = 256
MPP = 0.5
# DESIGN.md WSI defaults in 20x pixels (tiatoolbox) ...
TIA = dict(lambda_d=3e-3, lambda_f=1e-3, lambda_h=0.8, neighbour_search_radius=2000, connectivity_distance=4000)
# ... and the same geometry in um (radiopath): distances x0.5, lambda_d x2.
RP = dict(radius=1000.0, lambda_f=1e-3, lambda_d=6e-3, lambda_h=0.8, connectivity=2000.0)

GB = 1e9


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- data


def tissue_grid(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) integer grid cells (col, row) inside a random tissue-shaped region."""
    k = int(rng.integers(3, 6))
    centres = rng.uniform(0.3, 0.7, (k, 2))
    axes = rng.uniform(0.12, 0.3, (k, 2))
    angles = rng.uniform(0, np.pi, k)
    wave_vec = rng.normal(0, 5, (4, 2))
    wave_phase = rng.uniform(0, 2 * np.pi, 4)

    def level(p):  # > 0 inside the tissue
        out = np.full(len(p), -np.inf)
        for c, a, t in zip(centres, axes, angles):
            rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
            q = (p - c) @ rot.T / a
            out = np.maximum(out, 1 - (q * q).sum(1))
        return out + 0.25 * np.cos(2 * np.pi * p @ wave_vec.T + wave_phase).mean(1)

    probe = (np.stack(np.meshgrid(np.arange(300), np.arange(300)), -1).reshape(-1, 2) + 0.5) / 300
    fraction = max((level(probe) > 0).mean(), 0.05)
    side = int(np.ceil(np.sqrt(1.1 * n / fraction)))
    cells = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)  # (col, row)
    depth = level((cells + 0.5) / side)
    keep = np.sort(np.argsort(-depth, kind="stable")[:n])  # deepest n cells, row-major order
    return cells[keep]


def smooth_features(pos_um: np.ndarray, dim: int, rng: np.random.Generator, *, field_std: float,
                    noise_std: float, offset_std: float, latent: int = 16, waves: int = 4,
                    chunk: int = 20000) -> np.ndarray:
    """Smooth latent field (plateaus with soft borders) -> random projection -> + offset + noise."""
    wavelength = np.exp(rng.uniform(np.log(400.0), np.log(4000.0), (latent, waves)))  # um
    angle = rng.uniform(0, 2 * np.pi, (latent, waves))
    direction = np.stack([np.cos(angle), np.sin(angle)], -1) / wavelength[..., None]  # (L, W, 2)
    phase = rng.uniform(0, 2 * np.pi, (latent, waves))
    gain = rng.uniform(1.0, 3.0, latent)
    mix = (rng.standard_normal((latent, dim)) * (field_std / np.sqrt(latent))).astype(np.float32)
    offset = (rng.standard_normal(dim) * offset_std).astype(np.float32)
    out = np.empty((len(pos_um), dim), dtype=np.float32)
    for start in range(0, len(pos_um), chunk):
        p = pos_um[start:start + chunk]
        arg = 2 * np.pi * np.einsum("nd,lwd->nlw", p, direction) + phase
        z = np.tanh(gain * np.cos(arg).sum(-1) / np.sqrt(waves)).astype(np.float32)  # (n, L)
        block = z @ mix
        block += offset
        block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(noise_std)
        out[start:start + chunk] = block
    return out


def make_slide(n: int, dim: int, seed: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, dim) float32 and level-0 top-left coords (n, 2) float32 px."""
    rng = np.random.default_rng(seed)
    coords = (tissue_grid(n, rng) * PATCH_PX).astype(np.float32)
    pos_um = (coords.astype(np.float64) + PATCH_PX / 2) * MPP
    feats = smooth_features(pos_um, dim, rng, field_std=args.field_std, noise_std=args.noise_std,
                            offset_std=args.offset_std)
    return feats, coords


def feature_scale_summary(feats: np.ndarray, coords: np.ndarray, seed: int) -> dict:
    """Median feature distance of adjacent tiles and of tiles about one search radius apart."""
    rng = np.random.default_rng(seed)
    lookup = {(int(x), int(y)): i for i, (x, y) in enumerate(coords)}
    sample = rng.choice(len(coords), size=min(2000, len(coords)), replace=False)
    out = {}
    for name, (dx, dy) in {"adjacent": (PATCH_PX, 0), "radius": (7 * PATCH_PX, 0)}.items():
        pairs = [(i, lookup[key]) for i in sample
                 if (key := (int(coords[i, 0]) + dx, int(coords[i, 1]) + dy)) in lookup]
        if pairs:
            a, b = np.array(pairs).T
            out[name] = float(np.median(np.linalg.norm(feats[a].astype(np.float64) - feats[b], axis=1)))
    return out


# --------------------------------------------------------------------------- workers


def worker_radiopath(data: Path, result: Path, threads: int) -> None:
    import torch

    sys.path.insert(0, str(REPO))
    from radiopath.encoders.features import PatchFeatures
    from radiopath.graphs.build import build_graph

    torch.set_num_threads(threads)
    feats, coords = np.load(data / "features.npy"), np.load(data / "coords.npy")
    patches = PatchFeatures(case_id="bench", modality="pathology", encoder="synthetic", features=feats,
                            coords=coords, patch_size=np.array([PATCH_PX, PATCH_PX]), level0_mpp=MPP)
    rss_before = peak_rss_bytes()
    start = time.perf_counter()
    graph = build_graph(patches, radius=RP["radius"], lambda_f=RP["lambda_f"], lambda_d=RP["lambda_d"],
                        lambda_h=RP["lambda_h"], edges="delaunay", connectivity=RP["connectivity"])
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    labels = graph.assignment.numpy()
    np.save(result.with_suffix(".labels.npy"), labels)
    result.write_text(json.dumps(dict(
        seconds=seconds, peak_rss=peak, rss_before=rss_before, nodes=int(graph.num_nodes),
        edges=int(graph.edge_index.shape[1]), threads=torch.get_num_threads(),
        version=f"torch {torch.__version__}",
    )))


def worker_tiatoolbox(data: Path, result: Path) -> None:
    import scipy.cluster.hierarchy as hierarchy
    from importlib.metadata import version

    from tiatoolbox.tools import graph as tia_graph

    captured = {}
    fcluster = hierarchy.fcluster

    def recording_fcluster(*a, **kw):  # keeps build's per-patch labels; no extra work
        captured["labels"] = out = fcluster(*a, **kw)
        return out

    assert tia_graph.hierarchy is hierarchy
    hierarchy.fcluster = recording_fcluster

    feats, coords = np.load(data / "features.npy"), np.load(data / "coords.npy")
    points = coords.astype(np.float64) + PATCH_PX / 2  # patch centres, 20x px
    thresh = 1e-4  # build's default feature_range_thresh
    dropped = int(((feats.max(0) - feats.min(0)) <= thresh).sum())
    rss_before = peak_rss_bytes()
    start = time.perf_counter()
    graph = tia_graph.SlideGraphConstructor.build(
        points, feats, lambda_d=TIA["lambda_d"], lambda_f=TIA["lambda_f"], lambda_h=TIA["lambda_h"],
        connectivity_distance=TIA["connectivity_distance"],
        neighbour_search_radius=TIA["neighbour_search_radius"], feature_range_thresh=thresh)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    np.save(result.with_suffix(".labels.npy"), np.asarray(captured["labels"]))
    result.write_text(json.dumps(dict(
        seconds=seconds, peak_rss=peak, rss_before=rss_before, nodes=int(len(graph["x"])),
        edges=int(graph["edge_index"].shape[1]), dropped_columns=dropped,
        version=f"tiatoolbox {version('tiatoolbox')}",
    )))


def worker_profile(data: Path, result: Path, threads: int) -> None:
    """radiopath's build_graph, stage by stage: time and peak RSS after each stage."""
    import torch

    sys.path.insert(0, str(REPO))
    from radiopath.encoders.features import PatchFeatures
    from radiopath.graphs import build, cluster
    from radiopath.graphs.edges import delaunay_edges
    from radiopath.modality import modality

    torch.set_num_threads(threads)
    feats, coords = np.load(data / "features.npy"), np.load(data / "coords.npy")
    patches = PatchFeatures(case_id="bench", modality="pathology", encoder="synthetic", features=feats,
                            coords=coords, patch_size=np.array([PATCH_PX, PATCH_PX]), level0_mpp=MPP)
    stages = [("loaded (before build)", 0.0, peak_rss_bytes(), current_rss_bytes())]
    clock = time.perf_counter()

    def mark(name):
        nonlocal clock
        now = time.perf_counter()
        stages.append((name, now - clock, peak_rss_bytes(), current_rss_bytes()))
        clock = time.perf_counter()

    pos = modality(patches.modality).physical_positions(patches.coords, patches.patch_size, patches.level0_mpp)
    i, j, spatial = cluster.neighbour_pairs(pos, RP["radius"])
    mark(f"neighbour_pairs (cKDTree, {len(i):,} pairs)")
    similarity = cluster.pair_feature_distances(patches.features, pos, i, j, cell=RP["radius"])
    mark("pair_feature_distances")
    # kept for the accuracy check after the last stage (small: 100k pairs)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(i), size=min(100000, len(i)), replace=False)
    check = (i[pick], j[pick], similarity[pick])
    clock = time.perf_counter()
    similarity *= -RP["lambda_f"]  # as hybrid_similarity: s = exp(-lf*f) * exp(-ld*d), in place
    np.exp(similarity, out=similarity)
    spatial *= -RP["lambda_d"]
    np.exp(spatial, out=spatial)
    similarity *= spatial
    del spatial
    mark("similarity exp(-lf*f)*exp(-ld*d)")
    # Watch the merge rounds through _coalesce (called once per round that merged something):
    # pairs in/out, seconds inside it and in the round before it, peak RSS after it.
    coalesce, rounds = cluster._coalesce, []
    last = [time.perf_counter()]

    def watched_coalesce(edges, n):
        t0 = time.perf_counter()
        pairs_in = len(edges[0])
        out = coalesce(edges, n)
        t1 = time.perf_counter()
        rounds.append((pairs_in, len(out[0]), t1 - t0, t0 - last[0], peak_rss_bytes()))
        last[0] = t1
        return out

    cluster._coalesce = watched_coalesce
    # as cluster_patches: hand the only references to the pair arrays over
    edges = [torch.from_numpy(a) for a in (i, j, similarity)]
    del i, j, similarity
    labels = cluster._merge_rounds(len(feats), edges, RP["lambda_h"])
    cluster._coalesce = coalesce
    mark(f"average_linkage_clusters ({len(rounds)} merge rounds)")
    node_x = build._cluster_means(patches.features, labels)
    node_pos = build._cluster_means(pos, labels)
    mark("_cluster_means (features + positions)")
    edge_index = delaunay_edges(node_pos, RP["connectivity"])
    mark(f"delaunay_edges ({edge_index.shape[1]:,} directed edges)")
    # accuracy of the float32 Gram-matrix feature distances against float64, on sampled pairs
    max_err = 0.0
    for s in range(0, len(check[0]), 5000):
        a, b, got = (c[s:s + 5000] for c in check)
        exact = np.linalg.norm(feats[a].astype(np.float64) - feats[b], axis=1)
        max_err = max(max_err, float(np.abs(got - exact).max()))
    result.write_text(json.dumps(dict(stages=stages, max_feature_distance_error=max_err, rounds=rounds,
                                      nodes=int(len(node_x)))))


# --------------------------------------------------------------------------- driver


def run_worker(python: Path, kind: str, data: Path, result: Path, threads: int, timeout: float) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", kind, "--data", str(data),
           "--result", str(result), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    out = json.loads(result.read_text())
    labels = result.with_suffix(".labels.npy")
    if labels.exists():
        out["labels"] = np.load(labels)
    return out


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare-sizes", default="2000,5000,10000",
                   help="patch counts built by both radiopath and tiatoolbox (comma-separated)")
    p.add_argument("--large-sizes", default="50000,200000", help="patch counts built by radiopath only")
    p.add_argument("--dim", type=int, default=1024, help="feature dimension for radiopath-only sizes")
    p.add_argument("--compare-dim", type=int, default=None, help="feature dimension for compared sizes (default --dim)")
    p.add_argument("--field-std", type=float, default=3.0, help="per-dimension std of the smooth field")
    p.add_argument("--noise-std", type=float, default=1.0, help="per-dimension std of i.i.d. noise")
    p.add_argument("--offset-std", type=float, default=1.0, help="std of the per-dimension offset")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for radiopath (1 = build_graphs' default graph_threads)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tia-timeout", type=float, default=3600, help="seconds per tiatoolbox build")
    p.add_argument("--skip-tiatoolbox", action="store_true")
    p.add_argument("--profile", action="store_true", help="also profile radiopath stage by stage")
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, 256-d features")
    p.add_argument("--output", type=Path, help="also write the Markdown report here")
    p.add_argument("--worker", choices=["radiopath", "tiatoolbox", "profile"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker == "radiopath":
        return worker_radiopath(args.data, args.result, args.threads) or 0
    if args.worker == "tiatoolbox":
        return worker_tiatoolbox(args.data, args.result) or 0
    if args.worker == "profile":
        return worker_profile(args.data, args.result, args.threads) or 0

    if args.quick:
        args.compare_sizes, args.large_sizes, args.dim = "1000,2000", "20000", 256
    compare = [int(s) for s in args.compare_sizes.split(",") if s]
    large = [int(s) for s in args.large_sizes.split(",") if s]
    compare_dim = args.compare_dim or args.dim
    with_tia = not args.skip_tiatoolbox and BENCH_PY.exists()
    runs = [(n, compare_dim, with_tia) for n in compare] + [(n, args.dim, False) for n in large]

    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    nproc = os.cpu_count()
    say(f"Machine: {platform.node() or '?'}, {nproc} CPUs (nproc), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GB:.1f} GB RAM, "
        f"Python {platform.python_version()}; radiopath torch threads: {args.threads}")
    say("Command: .venv/bin/python scripts/bench_graphs.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    say(f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; load average at start (1/5/15 min): "
        + " / ".join(f"{x:.1f}" for x in os.getloadavg()))
    if not with_tia:
        say("tiatoolbox: not run (" + ("--skip-tiatoolbox" if args.skip_tiatoolbox else f"{BENCH_PY} missing: "
            "run scripts/setup_bench_env.sh") + ")")
    say(f"Synthetic features: field std {args.field_std}, noise std {args.noise_std}, offset std {args.offset_std}")
    say()

    rows, profiles = [], []
    with tempfile.TemporaryDirectory(prefix="bench_graphs_") as tmp:
        for n, dim, tia in runs:
            data = Path(tmp) / f"n{n}_d{dim}"
            data.mkdir()
            feats, coords = make_slide(n, dim, args.seed + n, args)
            scale = feature_scale_summary(feats, coords, args.seed)
            np.save(data / "features.npy", feats)
            np.save(data / "coords.npy", coords)
            feat_gb = feats.nbytes / GB
            del feats
            print(f"N={n:,} D={dim}: features {feat_gb:.2f} GB; median ||dx|| adjacent "
                  f"{scale.get('adjacent', float('nan')):.1f}, at ~radius {scale.get('radius', float('nan')):.1f}",
                  flush=True)
            rp = run_worker(PROJECT_PY, "radiopath", data, data / "rp.json", args.threads, timeout=3600)
            print(f"  radiopath: {({k: v for k, v in rp.items() if k != 'labels'})}", flush=True)
            ti = {}
            if tia:
                ti = run_worker(BENCH_PY, "tiatoolbox", data, data / "tia.json", args.threads, args.tia_timeout)
                print(f"  tiatoolbox: {({k: v for k, v in ti.items() if k != 'labels'})}", flush=True)
            if args.profile:
                prof = run_worker(PROJECT_PY, "profile", data, data / "prof.json", args.threads, timeout=3600)
                profiles.append((n, dim, prof))
            ari = None
            if "labels" in rp and "labels" in ti:
                from sklearn.metrics import adjusted_rand_score
                ari = adjusted_rand_score(ti["labels"], rp["labels"])
            rows.append(dict(n=n, dim=dim, feat_gb=feat_gb, scale=scale, rp=rp, ti=ti, ari=ari))
            for f in data.iterdir():
                f.unlink()
            data.rmdir()

    say("| N patches | D | features (GB) | radiopath time (s) | radiopath peak RSS (GB) | tiatoolbox time (s) "
        "| tiatoolbox peak RSS (GB) | speed-up | ARI | nodes radiopath / tiatoolbox | edges radiopath / tiatoolbox |")
    say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rp, ti = r["rp"], r["ti"]
        rp_ok, ti_ok = "seconds" in rp, "seconds" in ti
        speed = ti["seconds"] / rp["seconds"] if rp_ok and ti_ok else None
        say(f"| {r['n']:,} | {r['dim']} | {r['feat_gb']:.3f} "
            f"| {fmt(rp.get('seconds'), '.2f') if rp_ok else 'failed'} | {fmt(rp.get('peak_rss') and rp['peak_rss'] / GB, '.2f')} "
            f"| {fmt(ti.get('seconds'), '.2f') if ti_ok else ('failed' if ti else 'not run')} "
            f"| {fmt(ti.get('peak_rss') and ti['peak_rss'] / GB, '.2f')} "
            f"| {fmt(speed, '.1f')}{'×' if speed else ''} | {fmt(r['ari'], '.4f')} "
            f"| {rp.get('nodes', '–')} / {ti.get('nodes', '–')} | {rp.get('edges', '–')} / {ti.get('edges', '–')} |")
    say()
    say("RSS just before the build (imports + loaded inputs), GB: " + "; ".join(
        f"N={r['n']:,}: radiopath {fmt(r['rp'].get('rss_before') and r['rp']['rss_before'] / GB, '.2f')}"
        + (f", tiatoolbox {fmt(r['ti'].get('rss_before') and r['ti']['rss_before'] / GB, '.2f')}" if r['ti'] else "")
        for r in rows))
    say("Median feature distance ||dx|| (f = exp(-1e-3 ||dx||)), adjacent tiles / tiles 7 tiles apart: " + "; ".join(
        f"N={r['n']:,}: {r['scale'].get('adjacent', float('nan')):.1f} / {r['scale'].get('radius', float('nan')):.1f}"
        for r in rows))
    dropped = [r["ti"].get("dropped_columns") for r in rows if "dropped_columns" in r["ti"]]
    if dropped:
        say(f"Feature columns tiatoolbox drops (range <= feature_range_thresh 1e-4): {max(dropped)} in every run")
    for r in rows:
        for who in ("rp", "ti"):
            if "error" in r[who]:
                say(f"N={r['n']:,} {'radiopath' if who == 'rp' else 'tiatoolbox'} failed: {r[who]['error']}")
    versions = {r["rp"].get("version") for r in rows} | {r["ti"].get("version") for r in rows}
    say("Versions: " + ", ".join(sorted(v for v in versions if v)))
    say("Load average at the end (1/5/15 min): " + " / ".join(f"{x:.1f}" for x in os.getloadavg())
        + f" (on {nproc} CPUs: a load above {nproc} means the builds shared the cores with other work)")
    say()

    # targets
    say("Targets:")
    big = [r for r in rows if r["n"] >= 200000 and r["dim"] >= 1024 and "seconds" in r["rp"]]
    for r in big:
        t, m = r["rp"]["seconds"], r["rp"]["peak_rss"] / GB
        say(f"- {r['n']:,} patches x {r['dim']}-d in < 60 s and < 4 GB peak: {t:.1f} s, {m:.2f} GB -> "
            f"{'MET' if t < 60 and m < 4 else 'NOT MET'}")
    if not big:
        say("- 200,000 x 1024-d: not measured in this run")
    ten = [r for r in rows if r["n"] == 10000 and "seconds" in r["ti"] and "seconds" in r["rp"]]
    for r in ten:
        speed = r["ti"]["seconds"] / r["rp"]["seconds"]
        say(f"- 10,000 patches: >= 20x faster than tiatoolbox with ARI >= 0.9: {speed:.1f}x, ARI {r['ari']:.4f} -> "
            f"{'MET' if speed >= 20 and r['ari'] >= 0.9 else 'NOT MET'}")
    if not ten:
        say("- 10,000 patches vs tiatoolbox: not measured in this run")

    if profiles:
        say()
        say("radiopath stage profile (separate subprocess; peak RSS is the running process peak after each stage):")
        for n, dim, prof in profiles:
            say()
            if "error" in prof:
                say(f"N={n:,}: profile failed: {prof['error']}")
                continue
            say(f"N={n:,}, D={dim} (max |error| of float32 Gram feature distances vs float64, 100k sampled pairs: "
                f"{prof['max_feature_distance_error']:.2e})")
            say()
            say("| stage | time (s) | peak RSS after (GB) | current RSS after (GB) |")
            say("|---|---:|---:|---:|")
            for name, sec, peak, cur in prof["stages"]:
                say(f"| {name} | {sec:.2f} | {peak / GB:.2f} | {cur / GB:.2f} |")
            rounds = prof.get("rounds", [])
            if rounds:
                say()
                say(f"average_linkage_clusters, merge round by merge round: in `_coalesce` "
                    f"{sum(r[2] for r in rounds):.2f} s, in the loop body outside it "
                    f"{sum(r[3] for r in rounds[1:]):.2f} s (round 1's body time includes the setup); round: "
                    f"pairs contracted -> distinct pairs left (s in _coalesce + s in the round before it) "
                    f"[peak RSS GB after]: " + ", ".join(
                        f"{k}: {a:,} -> {b:,} ({t:.2f} + {body:.2f} s) [{pk / GB:.2f}]"
                        for k, (a, b, t, body, pk) in enumerate(rounds, 1)))

    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

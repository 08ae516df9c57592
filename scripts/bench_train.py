r"""Time SPARRA training with the vectorised Cox loss against a Python-loop reference.

Run with the project venv::

    .venv/bin/python scripts/bench_train.py                     # 200 patients, 10k / 3k-node graphs
    .venv/bin/python scripts/bench_train.py --patients 64 --path-nodes 4000 --rad-nodes 1200

Synthetic cohort: per patient a pathology graph (``--path-nodes`` ± 25 % nodes,
``--path-dim`` features, 2-D Delaunay edges) and a radiology graph (``--rad-nodes``
± 25 %, ``--rad-dim``, 3-D Delaunay), both built with ``radiopath.graphs.edges``;
standard-normal features; exponential survival times, about 35 % events. The model is
``SPARRAAggregator`` on both modalities with its defaults (GCN, ratio 0.2, hidden 128).

Measured (wall clock, median of ``--repeats``):

* the loss alone, forward + backward, on a batch of risks and on all patients' risks:
  ``cox_partial_nll`` (Breslow) against ``cox_nll_loop`` below, the straightforward
  implementation with a Python loop over events and over each risk set;
* one training step on one batch (collate, forward, Cox + KL + reconstruction, backward,
  Adam step), with each loss;
* one epoch (every patient once, ``--batch-size`` per step, collation included), with
  each loss.

Every timing follows one untimed warm-up call (the epoch follows the step timing); the loss-only timings take the median of
``20 * --repeats`` calls. The machine's load average is printed beside the table: on
shared cores the step and epoch times carry the other processes' noise.

Results are in ``scripts/bench_train_results.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch_geometric.data import Data

from radiopath.graphs.edges import delaunay_edges
from radiopath.models import build_aggregator, collate_patients, cox_partial_nll


def cox_nll_loop(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Breslow negative partial log-likelihood, averaged over events, by explicit loops."""
    terms = []
    for i in range(len(risk)):
        if not event[i]:
            continue
        at_risk = [risk[j] for j in range(len(risk)) if time[j] >= time[i]]
        terms.append(torch.logsumexp(torch.stack(at_risk), 0) - risk[i])
    if not terms:
        return risk.sum() * 0
    return torch.stack(terms).mean()


LOSSES = {"vectorised": cox_partial_nll, "loop": cox_nll_loop}


def synthetic_graph(rng: np.random.Generator, nodes: int, dim: int, space_dim: int) -> Data:
    n = int(rng.integers(int(0.75 * nodes), int(1.25 * nodes) + 1))
    pos = rng.uniform(0, 1, size=(n, space_dim))
    # Mean spacing between nodes, times 3: keeps nearly all Delaunay edges.
    edges = delaunay_edges(pos, max_length=3 * n ** (-1 / space_dim))
    return Data(x=torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32)),
                edge_index=torch.from_numpy(edges), pos=torch.from_numpy(pos.astype(np.float32)))


def synthetic_cohort(args):
    rng = np.random.default_rng(args.seed)
    patients = [{"pathology": synthetic_graph(rng, args.path_nodes, args.path_dim, 2),
                 "radiology": synthetic_graph(rng, args.rad_nodes, args.rad_dim, 3)}
                for _ in range(args.patients)]
    time_ = torch.from_numpy(rng.exponential(1.0, args.patients))
    event = torch.from_numpy(rng.random(args.patients) < 0.35)
    return patients, time_, event


def timed(fn, repeats: int, sync, warm_up: bool = True) -> float:
    """Median wall-clock seconds of ``repeats`` calls, after one untimed warm-up call."""
    if warm_up:
        fn()
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def train_step(model, optimizer, patients, time_, event, rows, loss_fn, device):
    batch = collate_patients([patients[r] for r in rows]).to(device)
    out = model(batch)
    loss = loss_fn(out.risk, time_[rows].to(device), event[rows].to(device)) + sum(out.loss_terms.values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def loss_only(loss_fn, risk, time_, event):
    risk = risk.detach().requires_grad_()
    loss_fn(risk, time_, event).backward()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--path-nodes", type=int, default=10_000)
    parser.add_argument("--rad-nodes", type=int, default=3_000)
    parser.add_argument("--path-dim", type=int, default=384)
    parser.add_argument("--rad-dim", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (1 avoids waiting on descheduled threads on busy cores)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    patients, time_, event = synthetic_cohort(args)
    build_s = time.perf_counter() - start
    path_nodes = sum(p["pathology"].num_nodes for p in patients)
    rad_nodes = sum(p["radiology"].num_nodes for p in patients)

    model = build_aggregator("sparra", {"pathology": args.path_dim, "radiology": args.rad_dim}).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-5)
    rows = list(range(min(args.batch_size, args.patients)))
    batches = [list(range(i, min(i + args.batch_size, args.patients)))
               for i in range(0, args.patients, args.batch_size)]

    results = {}
    all_risk = torch.randn(args.patients, dtype=torch.float32, device=device)
    for name, loss_fn in LOSSES.items():
        results[name] = {
            f"loss fwd+bwd, {len(rows)} risks": timed(
                lambda: loss_only(loss_fn, all_risk[rows], time_[rows].to(device), event[rows].to(device)),
                20 * args.repeats, sync),
            f"loss fwd+bwd, {args.patients} risks": timed(
                lambda: loss_only(loss_fn, all_risk, time_.to(device), event.to(device)), 20 * args.repeats, sync),
            f"training step, {len(rows)} patients": timed(
                lambda: train_step(model, optimizer, patients, time_, event, rows, loss_fn, device),
                args.repeats, sync),
            f"epoch, {len(batches)} steps": timed(
                lambda: [train_step(model, optimizer, patients, time_, event, b, loss_fn, device) for b in batches],
                1, sync, warm_up=False),  # the step timing just warmed up the same code
        }

    print("Command: python scripts/bench_train.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()))
    print(f"Machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"Cohort: {args.patients} patients, {path_nodes / args.patients:,.0f} pathology nodes x {args.path_dim} "
          f"and {rad_nodes / args.patients:,.0f} radiology nodes x {args.rad_dim} per patient on average, "
          f"{int(event.sum())} events; built in {build_s:.1f} s")
    print(f"Load average (1, 5, 15 min) after the run: {os.getloadavg()}")
    print(f"Timings: seconds, median of {args.repeats} (loss only: of {20 * args.repeats}; epoch: one run), "
          "each after a warm-up call\n")
    print("| what | vectorised cox_partial_nll (s) | Python-loop reference (s) | loop / vectorised |")
    print("|---|---:|---:|---:|")
    for what in results["vectorised"]:
        fast, slow = results["vectorised"][what], results["loop"][what]
        print(f"| {what} | {fast:.4f} | {slow:.4f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
    main()

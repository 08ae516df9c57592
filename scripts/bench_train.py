r"""Time a SPARRA and an ABMIL training epoch, this tree against commit a9376af, side by side.

Run with the project venv::

    .venv/bin/python scripts/bench_train.py --baseline-sparra             # 200 x (5,000 x 1024 + 1,000 x 768)
    .venv/bin/python scripts/bench_train.py --patients 40 --threads 2 --compete    # a quick look

At the defaults a worker peaks at ~12 GB RSS (a9376af; 4.8 GB of it the shared, memory-mapped
cohort) and one run takes 10-20 minutes on 2 cores; ``--patients 40`` needs ~5 GB and 4 minutes.

Synthetic cohort, built once and saved (``--cohort-dir``): per patient a pathology graph
(``--path-nodes`` ± 25 % nodes of ``--path-dim`` features, 2-D Delaunay edges) and a CT
graph (``--rad-nodes`` ± 25 %, ``--rad-dim``, 3-D Delaunay), both with
``radiopath.graphs.edges``; Gaussian features with a random mean and scale per feature;
exponential survival times, about 35 % events. At the defaults the node features are
~4.7 GB of float32; the workers memory-map the file, so the page cache holds them once.

The baseline is a git worktree of ``--baseline`` (made with ``git worktree add`` if
``--worktree`` is absent). Each (implementation, model) pair runs in its own worker process
of this script, with ``PYTHONPATH`` at that implementation's tree and the same venv, seeds,
threads and deterministic-algorithm setting as ``python -m radiopath.train``. A worker:

1. takes fold 0 of 5 (every fifth patient is a test patient) and the node scaler computed
   once from the training patients by this tree's ``NodeScaler`` (the same for both, so the
   epochs see the same inputs);
2. *check and warm-up*: from the seeded initial weights, ``fit`` for one epoch on the
   first ``--batch-size`` training patients (a single step) and records that step's loss
   (``history.loss``) and its parts;
3. *timing*: from the same initial weights, ``fit`` for one epoch on all training patients;
   reports the optimisation pass (``epoch_seconds``) and the whole epoch (with the per-epoch
   train and test C-index passes), the peak RSS of the epoch (``VmHWM`` reset before it)
   and the test risks afterwards.

Agreement: the first-step losses (and each part) must match to ``--rtol`` (same weights,
same batch, same dropout masks: only float rounding differs; 1e-3 because SPARRA's
reconstruction term moves by a node's share when rounding reorders near-tied top-k scores);
the test risks after the epoch are compared as a maximum absolute difference.
Without ``--baseline-sparra`` each tree runs its own SPARRA with the paper's settings
(``conf/model/sparra_paper.yaml``, the baseline's defaults), both starting from the weights
the baseline's class draws (copied in order: the tree draws its pooling weights differently).
``--baseline-sparra`` builds SPARRA from the baseline's ``sparra.py`` in both workers, so a
change of the model itself does not hide what the rest of the tree does.

``--compete`` runs one CPU-bound process (a Python busy loop) during all workers, as a
second user of the 2 cores would. The load average is printed beside the table.
Results and commands are in ``scripts/bench_train_results.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = ("sparra", "abmil")


def cohort_path(args) -> Path:
    name = (f"cohort-{args.patients}p-{args.path_nodes}x{args.path_dim}-{args.rad_nodes}x{args.rad_dim}"
            f"-seed{args.seed}.pt")
    return Path(args.cohort_dir) / name


def build_cohort(args, path: Path) -> None:
    """Synthetic graphs and survival, plus this tree's scaler of the training patients, saved to ``path``."""
    from torch_geometric.data import Data

    from radiopath.graphs.edges import delaunay_edges
    from radiopath.training.cohort import Patient
    from radiopath.training.scaling import NodeScaler

    rng = np.random.default_rng(args.seed)
    widths = {"pathology": (args.path_nodes, args.path_dim, 2), "radiology": (args.rad_nodes, args.rad_dim, 3)}
    offset = {m: rng.normal(0, 1, d).astype(np.float32) for m, (_, d, _) in widths.items()}
    scale = {m: rng.uniform(0.5, 2, d).astype(np.float32) for m, (_, d, _) in widths.items()}
    patients = []
    for i in range(args.patients):
        graphs = {}
        for modality, (nodes, dim, space) in widths.items():
            n = int(rng.integers(int(0.75 * nodes), int(1.25 * nodes) + 1))
            pos = rng.uniform(0, 1, size=(n, space))
            # 3x the mean node spacing: keeps nearly all Delaunay edges.
            edges = delaunay_edges(pos, max_length=3 * n ** (-1 / space))
            x = rng.standard_normal((n, dim), dtype=np.float32) * scale[modality] + offset[modality]
            graphs[modality] = {"x": torch.from_numpy(x), "edge_index": torch.from_numpy(edges)}
        patients.append({"case_id": f"p{i:04d}", "time": float(rng.exponential(1.0)) + 0.01,
                         "event": int(rng.random() < 0.35), "graphs": graphs})
    train, _ = split([to_patient(p, Patient, Data) for p in patients])
    scaler = tree_api().scaler().fit(train)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"patients": patients, "mean": scaler.mean_, "scale": scaler.scale_}, tmp)
    tmp.rename(path)


def to_patient(record: dict, patient_cls, data_cls):
    graphs = {m: data_cls(x=g["x"], edge_index=g["edge_index"], num_nodes=g["x"].size(0))
              for m, g in record["graphs"].items()}
    return patient_cls(record["case_id"], record["time"], record["event"], graphs)


def split(patients: list) -> tuple[list, list]:
    """Fold 0 of 5: every fifth patient is a test patient."""
    return [p for i, p in enumerate(patients) if i % 5], [p for i, p in enumerate(patients) if not i % 5]


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def rss_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2 ** 20
    return float("nan")


def worker(args) -> None:
    """One implementation (the ``radiopath`` on PYTHONPATH), one model: check, warm up, time; JSON on stdout."""
    import copy

    from torch_geometric.data import Data

    import radiopath
    from radiopath.training.cohort import Patient
    from radiopath.training.trainer import fit, predict

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as python -m radiopath.train (deterministic: true)
    device = torch.device(args.device)
    saved = torch.load(cohort_path(args), mmap=True, weights_only=True)
    patients = [to_patient(p, Patient, Data) for p in saved["patients"]]
    train, test = split(patients)
    api = tree_api()
    scaler = api.scaler()
    scaler.mean_, scaler.scale_ = saved["mean"], saved["scale"]
    for p in patients:  # page the features in: the epoch then reads memory, not the disk
        for g in p.graphs.values():
            g.x.sum()
    base_rss = rss_gb("VmRSS")
    settings = api.settings(epochs=1, batch_size=args.batch_size)
    in_dims = {m: g.x.size(1) for m, g in patients[0].graphs.items()}

    torch.manual_seed(args.seed)
    if args.model == "sparra" and args.sparra_from:
        initial = baseline_sparra(Path(args.sparra_from))(in_dims).to(device)
    else:
        initial = api.model(args.model, in_dims).to(device)
        if args.model == "sparra" and args.weights_from:
            torch.manual_seed(args.seed)
            copy_weights(baseline_sparra(Path(args.weights_from))(in_dims), initial)

    def run(subset_train, subset_test):
        model = copy.deepcopy(initial)
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        history = fit(model, subset_train, subset_test, scaler, settings,
                      torch.Generator().manual_seed(args.seed), device)
        return model, history.iloc[0].to_dict(), time.perf_counter() - start

    _, first, _ = run(train[:args.batch_size], test[:args.batch_size])
    reset_peak_rss()
    load = os.getloadavg()
    model, epoch, wall = run(train, test)
    peak = rss_gb("VmHWM")
    risk = predict(model, test, scaler, settings, device)[0]
    print(json.dumps({
        "module": radiopath.__file__, "first_step": {k: first[k] for k in first if k in ("loss", "cox", "kl", "recon")},
        "train_pass_s": epoch["epoch_seconds"], "epoch_s": wall, "peak_rss_gb": peak, "cohort_rss_gb": base_rss,
        "load_before": load, "load_after": os.getloadavg(), "test_risk": risk.tolist(),
        "threads": torch.get_num_threads(),
    }))


class TreeAPI(NamedTuple):
    """How the tree on PYTHONPATH builds a scaler, training settings and a model."""

    scaler: Callable
    settings: Callable
    model: Callable


# a9376af's TrainSettings defaults, given to both trees so that they optimise alike; the fields
# added since (warmup_epochs, eval_every) get the values that change nothing.
SETTINGS = {"lr": 3e-4, "weight_decay": 1e-5, "ties": "breslow", "eval_batch_size": 64}
NEW_SETTINGS = {"warmup_epochs": 0, "eval_every": 1}


def tree_api() -> TreeAPI:
    """Both implementations' ways, with the same settings.

    The baseline (a9376af) builds its models with constructor defaults, which equal
    ``conf/model/sparra_paper.yaml`` (ABMIL: ``abmil.yaml``); since the redesign those
    values live only in the config. Both get the training settings of :data:`SETTINGS`.
    """
    from radiopath.training.scaling import NodeScaler
    from radiopath.training.trainer import TrainSettings

    try:
        from radiopath.config import CONF_DIR
        from radiopath.models import AGGREGATORS
    except ImportError:  # the baseline tree
        from radiopath.models import build_aggregator

        return TreeAPI(NodeScaler, lambda **changes: TrainSettings(**SETTINGS, **changes), build_aggregator)
    from omegaconf import OmegaConf

    def conf(path: str, key: str) -> dict:
        return OmegaConf.to_container(OmegaConf.load(CONF_DIR / path)[key], resolve=True)

    files = {"sparra": "model/sparra_paper.yaml", "abmil": "model/abmil.yaml", "mean": "model/mean.yaml"}
    return TreeAPI(
        scaler=lambda: NodeScaler(**conf("train.yaml", "node_features")),
        settings=lambda **changes: TrainSettings.from_config({**SETTINGS, **NEW_SETTINGS, **changes}),
        model=lambda name, in_dims: AGGREGATORS.create(name, in_dims, **conf(files[name], "kwargs")),
    )


def baseline_sparra(tree: Path) -> type:
    """``SPARRAAggregator`` as defined in ``tree``'s sparra.py, on this process's radiopath (layers, batch, ...)."""
    spec = importlib.util.spec_from_file_location("baseline_sparra", tree / "radiopath" / "models" / "sparra.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SPARRAAggregator


def copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """``source``'s parameters and buffers into ``target``'s, in order (shapes may differ, sizes may not).

    The tree's SPARRA draws its initial weights in another order than the baseline's (its
    pooling weight is ``(hidden,)``, PyG's ``(1, hidden)`` drawn twice), so without this the two
    would start from different weights and their losses could not be compared.
    """
    pairs = list(zip(source.state_dict().items(), target.state_dict().items()))
    if len(source.state_dict()) != len(target.state_dict()) or any(
            a.numel() != b.numel() for (_, a), (_, b) in pairs):
        raise SystemExit("the two SPARRA implementations have different parameters: cannot share weights")
    target.load_state_dict({name: value.reshape(mine.shape) for (_, value), (name, mine) in pairs})


def ensure_worktree(path: Path, commit: str) -> None:
    if not (path / "radiopath").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True)


def run_worker(args, root: Path, model: str) -> dict:
    command = [sys.executable, __file__, "--worker", "--model", model, *forwarded(args)]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONUTF8": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"worker {root} {model} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(root)):
        raise SystemExit(f"worker for {root} imported {result['module']}")
    return result


def forwarded(args) -> list[str]:
    keys = ("patients", "path_nodes", "rad_nodes", "path_dim", "rad_dim", "batch_size", "threads", "seed",
            "device", "cohort_dir")
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in keys]
    return flags + [f"--sparra-from={args.worktree}" if args.baseline_sparra else f"--weights-from={args.worktree}"]


def agree(a: dict, b: dict, rtol: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rtol * max(1.0, abs(a[k])) for k in a)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--path-nodes", type=int, default=5_000)
    parser.add_argument("--rad-nodes", type=int, default=1_000)
    parser.add_argument("--path-dim", type=int, default=1024)
    parser.add_argument("--rad-dim", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in every worker")
    parser.add_argument("--compete", action="store_true", help="run a CPU-bound process during the timing")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--baseline", default="a9376af", help="commit to compare with")
    parser.add_argument("--worktree", default="/tmp/radiopath-a9376af", help="git worktree of --baseline")
    parser.add_argument("--cohort-dir", default="/tmp/radiopath-bench-train")
    parser.add_argument("--baseline-sparra", action="store_true",
                        help="both workers build SPARRA from the baseline's sparra.py (isolates everything else)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="tolerance of the first-step loss check")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--sparra-from", help=argparse.SUPPRESS)
    parser.add_argument("--weights-from", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return build_cohort(args, cohort_path(args))
    if args.worker:
        return worker(args)

    worktree = Path(args.worktree)
    ensure_worktree(worktree, args.baseline)
    path = cohort_path(args)
    start, built = time.perf_counter(), not path.is_file()
    if built:  # in a child process: the GBs it allocates stay behind in a long-lived allocator heap
        subprocess.run([sys.executable, __file__, "--build", *forwarded(args)], check=True)
    build = f"built in {time.perf_counter() - start:.0f} s" if built else "reused"
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.compete else None
    results = {}
    try:
        for model in args.models:
            for name, root in ((args.baseline, worktree), ("this tree", REPO)):
                results[name, model] = run_worker(args, root, model)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()

    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (
        "patients", "path_nodes", "rad_nodes", "path_dim", "rad_dim", "batch_size", "threads", "baseline", "seed")]
    flags += ["--compete"] * args.compete + ["--baseline-sparra"] * args.baseline_sparra
    print(f"Command: python scripts/bench_train.py {' '.join(flags)} --models {' '.join(args.models)}")
    print(f"Machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {args.device}; "
          f"competing busy loop: {'yes' if args.compete else 'no'}")
    print(f"Cohort: {args.patients} patients ({len(split(range(args.patients))[0])} train / "
          f"{len(split(range(args.patients))[1])} test), {args.path_nodes:,} ± 25 % pathology nodes x {args.path_dim} "
          f"+ {args.rad_nodes:,} ± 25 % CT nodes x {args.rad_dim}; {path} ({build})\n")
    print("| implementation | model | threads | optimisation pass (s) | epoch with C-index passes (s) "
          "| peak RSS (GB) | RSS before (GB) | speed-up: pass / epoch | first-step loss | agrees "
          "| max abs Δ test risk | load avg before / after |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for model in args.models:
        base, new = results[args.baseline, model], results["this tree", model]
        speed_up = f"{base['train_pass_s'] / new['train_pass_s']:.2f}x / {base['epoch_s'] / new['epoch_s']:.2f}x"
        same = "yes" if agree(base["first_step"], new["first_step"], args.rtol) else "NO"
        delta = f"{np.abs(np.subtract(base['test_risk'], new['test_risk'])).max():.2e}"
        for name, r, extra in ((args.baseline, base, ("", "", "")), ("this tree", new, (speed_up, same, delta))):
            print(f"| {name} | {model} | {r['threads']} | {r['train_pass_s']:.1f} | {r['epoch_s']:.1f} "
                  f"| {r['peak_rss_gb']:.2f} | {r['cohort_rss_gb']:.2f} | {extra[0]} | {r['first_step']['loss']:.6f} "
                  f"| {extra[1]} | {extra[2]} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")
    for model in args.models:
        base, new = results[args.baseline, model], results["this tree", model]
        print(f"\n{model} first step, {args.baseline}: {base['first_step']}\n{model} first step, this tree: "
              f"{new['first_step']}")


if __name__ == "__main__":
    main()

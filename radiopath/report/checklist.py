"""Which reproducibility-checklist items the run records answer (``python -m radiopath.checklist``).

Reads ``RUN/run_record.json`` and every ``run_record*.json`` in its sub-folders (the
records of :mod:`radiopath.repro`, e.g. ``RUN/survival/run_record.json``), checks the
DLRRC items of ``conf/checklist_items.yaml`` against them, and groups them as in the
paper: recorded, partly (recorded, but the author still has something to add),
missing (the records could answer it but do not), author (only the author can).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from omegaconf import OmegaConf

from radiopath.config import CONF_DIR
from radiopath.entry import StageResult
from radiopath.errors import ConfigError
from radiopath.io import is_temporary
from radiopath.layout import RECORD_GLOB

ITEMS_FILE = CONF_DIR / "checklist_items.yaml"
STATUSES = ("recorded", "partly", "missing", "author")
GB = 1024 ** 3


def load_records(run_dir: str | Path) -> list[dict]:
    """Every finished or failed run record under ``run_dir`` (its own first), each with ``_path``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}")
    records = []
    for path in sorted(run_dir.rglob(RECORD_GLOB), key=lambda p: (len(p.parts), str(p))):
        if is_temporary(path):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # not a record (or a damaged one): the checklist only reads what it can trust
        if isinstance(record, dict) and "stage" in record and "record_version" in record:
            records.append({**record, "_path": str(path)})
    return records


def _usable(records: Iterable[dict]) -> list[dict]:
    return [r for r in records if str(r.get("status", "")).startswith("finished")]


def _stage(records, *stages) -> list[dict]:
    return [r for r in records if r.get("stage") in stages]


def _get(record: dict, dotted: str, default=None):
    node = record
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _first(records, dotted: str):
    return next((value for r in records if (value := _get(r, dotted)) not in (None, {}, [])), None)


# -- rules: records -> evidence text, or None when the records hold nothing for the item ---------------
def _filtration(records):
    with_data = [r for r in records if "rejected_rows" in r.get("dataset", {}) or "rejected" in r.get("dataset", {})]
    if not with_data:
        return None
    rejected = max(r["dataset"].get("rejected_rows", r["dataset"].get("rejected", 0)) for r in with_data)
    failed = {f["case_id"] for r in records for c in r.get("cases", {}).values() for f in c["failed"]}
    return (f"manifest rows validated (unique id, survival values, files present): {rejected} rejected; "
            f"{len(failed)} case(s) failed a stage; each with its reason in failures.csv and the records")


def _modalities(records):
    present = _first(records, "dataset.images_present") or _first(records, "dataset.modalities_present")
    patients = _first(records, "dataset.patients")
    if not present:
        return None
    return f"images present of {patients} patients: " + ", ".join(f"{k} {v}" for k, v in present.items())


def _label_ratio(records):
    events, censored = _first(records, "dataset.events"), _first(records, "dataset.censored")
    if events is None or censored is None:
        return None
    total = events + censored
    text = f"events {events} of {total} ({100 * events / max(total, 1):.0f}%)"
    labels = _first(records, "dataset.labels") or {}
    return text + "".join(f"; {name} {counts}" for name, counts in labels.items())


def _images_per_case(records):
    counts = _first(records, "dataset.images_per_case")
    if not counts:
        return None
    return "cases by number of images: " + ", ".join(f"{n} images: {k} cases" for n, k in counts.items())


def _preprocessing(records):
    config = _first(_stage(records, "encode", "build_graphs"), "config")
    if not config:
        return None
    parts = [f"CT resampled to {config['ct']['spacing_mm']} mm, {config['ct']['normalisation']} normalisation"
             ] if "ct" in config else []
    if "wsi" in config:
        tiling = config["wsi"]["tiling"]
        parts.append(f"slides tiled at {tiling['mpp']} µm/px, {tiling['tile_size']} px tiles")
    return "; ".join(parts) + " (full settings in the resolved config)" if parts else None


def _folds(records):
    return _first(_stage(records, "train"), "config.folds")


def _split_ratio(records):
    folds = _folds(records)
    if not folds:
        return None
    n = folds["n_folds"]
    return f"{n}-fold cross-validation: each fold tests about {100 / n:.0f}% of the patients, trains on the rest"


def _patient_level_folds(records):
    entry = next((e for r in _stage(records, "train") for e in r["inputs"] if e["role"] == "folds" and e["sha256"]),
                 None)
    if entry is None:
        return None
    return f"patient-level folds in {entry['path']} (one fold per case_id; sha256 {entry['sha256'][:12]}…)"


def _random_folds(records):
    folds = _folds(records)
    return None if not folds else f"folds drawn at random, stratified on the event, seed {folds['seed']}"


def _regularisation(records):
    config = _first(_stage(records, "train"), "config")
    if not config:
        return None
    dropout = _get(config, "model.kwargs.dropout")
    text = f"weight decay {_get(config, 'training.weight_decay')}"
    text += f", dropout {dropout}" if dropout is not None else ""
    return text + f", {_get(config, 'folds.n_folds')}-fold cross-validation, no model selection on test folds"


def _software(records):
    packages = _first(records, "packages")
    if not packages:
        return None
    shown = {k: v for k, v in packages.items() if v}
    return ", ".join(f"{k} {v}" for k, v in shown.items()) + (
        "" if packages.get("cuda") else " (no CUDA)")


def _hardware(records):
    hw = _first(records, "hardware")
    if not hw:
        return None
    gpus = ", ".join(g["name"] for g in hw.get("gpus") or []) or "no GPU"
    memory = f"{hw['memory_bytes'] / GB:.0f} GB RAM" if hw.get("memory_bytes") else "RAM unknown"
    driver = f", driver {hw['gpu_driver']}" if hw.get("gpu_driver") else ""
    return f"{hw.get('cpu_model') or 'CPU unknown'}, {hw.get('cpu_cores')} cores, {memory}, {gpus}{driver}"


def _epoch_tables(records):
    return {name: rows for r in _stage(records, "train", "classify") for name, rows in r.get("epochs", {}).items()}


def _epoch_times(records):
    tables = _epoch_tables(records)
    times = [row["epoch_seconds"] for rows in tables.values() for row in rows if row.get("epoch_seconds") is not None]
    if not times:
        return None
    epochs = max(len(rows) for rows in tables.values())
    return (f"{epochs} epochs per fold over {len(tables)} folds; {sum(times) / len(times):.2f} s per epoch "
            f"on average ({min(times):.2f}–{max(times):.2f} s)")


def _hyperparameters(records):
    training = _first(_stage(records, "train", "classify"), "config.training")
    if not training or "batch_size" not in training or "lr" not in training:
        return None
    return ", ".join(f"{k} {v}" for k, v in training.items())


def _curves(records):
    tables = _epoch_tables(records)
    columns = {key for rows in tables.values() for row in rows for key in row}
    if "loss" not in columns:
        return None
    metrics = sorted(c for c in columns if "index" in c or "acc" in c or "auc" in c)
    return f"loss and {', '.join(metrics) or 'no metric'} per epoch for {len(tables)} folds (history.csv, report)"


def _cross_validation(records):
    folds = _folds(records)
    return None if not folds or folds["n_folds"] < 2 else f"{folds['n_folds']}-fold patient-level cross-validation"


def _initial_weights(records):
    train = _stage(records, "train", "classify")
    weights = [w for r in records for w in r.get("weights", [])]
    if not train and not weights:
        return None
    parts = []
    if train:
        parts.append(f"aggregators initialised at random with seeds {train[0].get('seeds')} (fold k: seed + k)")
    for w in {w["source"]: w for w in weights}.values():
        parts.append(f"{w['source']}: " + ("random initialisation" if w.get("random_init")
                                            else f"{w['path']} (sha256 {str(w['sha256'])[:12]}…)"))
    return "; ".join(parts)


def _workload(records):
    parameters = {name: p["total"] for r in records for name, p in r.get("parameters", {}).items()}
    if not parameters:
        return None
    peak = max((_get(r, "peak_memory.max_rss_bytes") or 0) for r in records)
    total = sum(_get(r, "timings.stage_total") or 0 for r in records)
    sizes = sorted(set(parameters.values()))
    return (f"parameters {', '.join(f'{s:,}' for s in sizes)}; peak memory {peak / GB:.2f} GB; "
            f"{total:.0f} s wall time over {len(records)} stage run(s)")


def _metrics(records):
    config = _first(_stage(records, "survival", "classify"), "config")
    if not config:
        return None
    models = config.get("models", [])
    return f"C-index, C-IPCW, cumulative/dynamic AUC and IBS per fold for {', '.join(models)}"


def _test_details(records):
    folds = _first(_stage(records, "survival", "classify"), "dataset.folds")
    if not folds:
        return None
    return "test patients (events) per fold: " + ", ".join(
        f"fold {k}: {v['test']} ({v['test_events']})" for k, v in folds.items()) + "; predictions.csv"


def _code_version(records):
    git = _first(records, "git")
    if not git or not git.get("commit"):
        return None
    dirty = {True: " with uncommitted changes", False: ", clean", None: ""}[git.get("dirty")]
    return f"git commit {git['commit'][:12]}{dirty}"


def _data_hashes(records):
    inputs = {e["path"]: e for r in records for e in r.get("inputs", []) if e.get("sha256")}
    if not inputs:
        return None
    return f"sha256 of {len(inputs)} input file(s): " + ", ".join(
        f"{Path(p).name} {e['sha256'][:12]}…" for p, e in list(inputs.items())[:4])


def _weight_hashes(records):
    files = {e["path"] for r in records for e in r.get("weights", []) + r.get("outputs", []) if e.get("sha256")}
    return None if not files else f"sha256 of {len(files)} weight/checkpoint file(s) recorded"


RULES: dict[str, Callable[[list[dict]], str | None]] = {
    "filtration": _filtration, "modalities": _modalities, "label_ratio": _label_ratio,
    "images_per_case": _images_per_case, "preprocessing": _preprocessing, "split_ratio": _split_ratio,
    "patient_level_folds": _patient_level_folds, "random_folds": _random_folds, "regularisation": _regularisation,
    "software": _software, "hardware": _hardware, "epoch_times": _epoch_times, "hyperparameters": _hyperparameters,
    "curves": _curves, "cross_validation": _cross_validation, "initial_weights": _initial_weights,
    "workload": _workload, "metrics": _metrics, "test_details": _test_details, "code_version": _code_version,
    "data_hashes": _data_hashes, "weight_hashes": _weight_hashes,
}


def load_items(path: str | Path = ITEMS_FILE) -> list[dict]:
    """The checklist parts and items (``conf/checklist_items.yaml``)."""
    return OmegaConf.to_container(OmegaConf.load(path))["parts"]


def evaluate(records: list[dict], parts: list[dict] | None = None) -> list[dict]:
    """Each part with its items' ``status``, ``evidence`` and what remains for the ``author``."""
    usable = _usable(records)
    result = []
    for part in parts or load_items():
        items = []
        for item in part["items"]:
            evidence = RULES[item["evidence"]](usable) if "evidence" in item else None
            if evidence:
                status = "partly" if item.get("author") else "recorded"
            else:
                status = "missing" if "evidence" in item else "author"
            items.append({"id": item["id"], "text": item["text"], "status": status,
                          "evidence": evidence, "author": item.get("author")})
        result.append({"name": part["name"], "items": items})
    return result


def counts(parts: list[dict]) -> dict[str, int]:
    """How many items have each status."""
    return {s: sum(i["status"] == s for p in parts for i in p["items"]) for s in STATUSES}


def format_text(parts: list[dict], records: list[dict]) -> str:
    """The checklist for a terminal, grouped by part."""
    lines = [f"records: {r['_path']} ({r['stage']}, {r['status']})" for r in records] or ["no run records found"]
    for part in parts:
        lines += ["", part["name"]]
        for item in part["items"]:
            lines.append(f"  [{item['status']:>8}] {item['id']:>2}. {item['text']}")
            if item["evidence"]:
                lines.append(f"               recorded: {item['evidence']}")
            if item["status"] != "recorded" and item["author"]:
                lines.append(f"               for the author: {item['author']}")
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts(parts).items())]
    return "\n".join(lines)


def as_json(parts: list[dict], records: list[dict]) -> str:
    """The checklist as JSON (for reports and scripts)."""
    return json.dumps({"records": [{"path": r["_path"], "stage": r["stage"], "status": r["status"]} for r in records],
                       "counts": counts(parts), "parts": parts}, indent=2)


def run(cfg) -> StageResult:
    """The checklist of ``cfg.run_dirs`` against ``cfg.items_file`` (the built-in DLRRC items when null)."""
    records = []
    for run_dir in cfg.run_dirs:
        try:
            records += load_records(run_dir)
        except FileNotFoundError as error:
            raise ConfigError("run_dirs", str(error)) from None
    parts = evaluate(records, load_items(cfg.items_file or ITEMS_FILE))
    if cfg.json:
        return StageResult(None, None, lines=[as_json(parts, records)])
    return StageResult(Path(cfg.run_dirs[0]), "checklist of the run records", lines=[format_text(parts, records)])

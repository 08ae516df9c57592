"""The reproducibility record every stage leaves beside its outputs: ``OUTPUT/run_record.json``.

Usage in an entry point::

    with run_record("train", cfg, cfg.output_dir) as record:
        record.input(cfg.data.manifest, "cohort manifest")
        record.weights(checkpoint, source="encoder.pathology.checkpoint")
        record.timing("fold0", seconds)
        ...

The record holds the resolved config, seeds and determinism flags, package
versions, the git commit, the hardware, wall times (per stage, fold, epoch),
parameter counts, peak memory, sha256 of the inputs and weights, and a dataset
summary. It is written atomically when the block ends, also when the stage fails
(``status: failed`` and the error). Code deep inside a stage reaches the open
record through :func:`active` (a record that writes nothing when none is open).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from radiopath.io import atomic_write_text
from radiopath.layout import RECORD_NAME

RECORD_VERSION = 1
# Label in the record -> distribution name.
PACKAGES = {
    "radiopath": "radiopath",  # the installed version: an install outside a checkout has no git commit
    "torch": "torch",
    "torch-geometric": "torch_geometric",
    "scikit-survival": "scikit-survival",
    "scikit-learn": "scikit-learn",
    "lifelines": "lifelines",
    "timm": "timm",
    "monai": "monai",
    "pyradiomics": "pyradiomics",
    "SimpleITK": "SimpleITK",
    "openslide-python": "openslide-python",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "hydra-core": "hydra-core",
    "omegaconf": "omegaconf",
}
LABEL_COLUMNS = ("malignant", "high_grade", "aggressive", "isup_grade", "sex")
IMAGE_COLUMNS = ("ct", "mask", "wsi", "pathology_features")
HASH_CHUNK = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[1]

_ACTIVE: contextvars.ContextVar["RunRecord | None"] = contextvars.ContextVar("radiopath_run_record", default=None)


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in chunks: weight files can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | Path, **extra) -> dict:
    """Path, size and sha256 of a file; a missing file is recorded as missing, not an error."""
    path = Path(path).expanduser()
    entry = {"path": str(path.resolve()), **extra}
    if path.is_file():
        entry.update(bytes=path.stat().st_size, sha256=sha256(path))
    else:
        entry.update(bytes=None, sha256=None, missing=True)
    return entry


def package_versions() -> dict[str, str | None]:
    """Versions of the packages results depend on (None when not installed), plus Python and CUDA."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for label, distribution in PACKAGES.items():
        try:
            versions[label] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[label] = None
    versions["openslide-library"] = _openslide_library()
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return versions


def _openslide_library() -> str | None:
    try:
        import openslide
    except Exception:  # noqa: BLE001 - the shared library may be missing; the record says so
        return None
    return getattr(openslide, "__library_version__", None)


def git_state(root: str | Path = REPO_ROOT) -> dict[str, object]:
    """The project's commit and whether tracked files differ from it; nulls without git or a repository."""
    if shutil.which("git") is None:
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=20, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def hardware() -> dict[str, object]:
    """CPU model and cores, memory, GPUs and the NVIDIA driver when there are any."""
    info: dict[str, object] = {
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": _total_memory(),
        "gpus": [],
        "gpu_driver": None,
    }
    if torch.cuda.is_available():
        info["gpus"] = [
            {"name": torch.cuda.get_device_name(i), "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
            for i in range(torch.cuda.device_count())
        ]
        info["gpu_driver"] = _nvidia_driver()
    return info


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _total_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def determinism() -> dict[str, object]:
    """The flags that decide whether a rerun gives the same numbers."""
    return {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch_deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "torch_initial_seed": torch.initial_seed(),
        "torch_num_threads": torch.get_num_threads(),
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def config_seeds(config: dict) -> dict[str, object]:
    """Every ``seed`` key of the resolved config, by dotted path (``seed``, ``folds.seed``)."""
    found = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{prefix}.{key}" if prefix else str(key)
                if key == "seed" and not isinstance(value, (dict, list)):
                    found[path] = value
                walk(value, path)

    walk(config, "")
    return found


def peak_memory() -> dict[str, int | None]:
    """Peak resident memory of this process and its finished children (and of the GPU, if used)."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    peak = {
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "children_max_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
        "cuda_max_allocated_bytes": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return peak


def _resolved(cfg) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation only hydra can resolve: keep it as written
            return OmegaConf.to_container(cfg, resolve=False)
    return dict(cfg)


def manifest_summary(frame: pd.DataFrame, rejected: int = 0) -> dict[str, object]:
    """Patients, events, label ratios and images per case of a cohort manifest table."""
    summary: dict[str, object] = {"patients": int(len(frame)), "rejected_rows": int(rejected)}
    if "os_event" in frame:
        events = pd.to_numeric(frame["os_event"], errors="coerce")
        summary["events"] = int((events == 1).sum())
        summary["censored"] = int((events == 0).sum())
    labels = {}
    for column in LABEL_COLUMNS:
        if column in frame and frame[column].notna().any():
            counts = frame[column].dropna().value_counts().sort_index()
            labels[column] = {str(_plain(k)): int(v) for k, v in counts.items()}
    summary["labels"] = labels
    present = {c: int(frame[c].fillna("").astype(str).str.len().gt(0).sum()) for c in IMAGE_COLUMNS if c in frame}
    summary["images_present"] = present
    if present:
        per_case = sum(frame[c].fillna("").astype(str).str.len().gt(0) for c in present)
        summary["images_per_case"] = {str(k): int(v) for k, v in per_case.value_counts().sort_index().items()}
    return summary


def _plain(value):
    """A label value as the manifest shows it (1.0 -> 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _json_safe(value):
    """NaN/inf -> None, numpy scalars -> Python, paths -> str: ``run_record.json`` is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class RunRecord:
    """What one run of a stage used and did; :meth:`write` puts it in ``output_dir``."""

    def __init__(self, stage: str, cfg=None, output_dir: str | Path | None = None, filename: str = RECORD_NAME):
        self.path = None if output_dir is None else Path(output_dir) / filename
        self._start = time.perf_counter()
        config = _resolved(cfg)
        self.data: dict = {
            "record_version": RECORD_VERSION,
            "stage": stage,
            "status": "running",
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, *sys.argv],
            "config": config,
            "seeds": config_seeds(config),
            "inputs": [],
            "weights": [],
            "outputs": [],
            "timings": {},
            "epochs": {},
            "parameters": {},
            "dataset": {},
            "cases": {},
            "notes": [],
        }

    # -- what the stage reports ------------------------------------------------------------------
    def input(self, path: str | Path, role: str) -> None:
        """An input file (cohort manifest, folds.csv, feature table), hashed once."""
        resolved = str(Path(path).expanduser().resolve())
        if not any(e["path"] == resolved and e["role"] == role for e in self.data["inputs"]):
            self.data["inputs"].append(file_entry(path, role=role))

    def cohort(self, manifest) -> None:
        """A loaded :class:`~radiopath.data.manifest.Manifest`: its file as an input and its summary."""
        self.input(manifest.path, "cohort manifest")
        self.dataset(**manifest_summary(manifest.frame, rejected=len(manifest.problems)))

    def weights(self, path: str | Path | None, source: str) -> None:
        """A weight file the stage loaded; ``source`` names the config key it came from. None: random init."""
        if path is None:
            self.data["weights"].append({"path": None, "source": source, "sha256": None, "random_init": True})
        else:
            self.data["weights"].append(file_entry(path, source=source))

    def output(self, path: str | Path, role: str) -> None:
        """A checkpoint or key output the stage wrote, hashed (e.g. a fold's ``model.pt``)."""
        self.data["outputs"].append(file_entry(path, role=role))

    def timing(self, name: str, seconds: float) -> None:
        """Wall time of one part of the stage (a fold, an encoder pass)."""
        self.data["timings"][name] = round(float(seconds), 3)

    def epochs(self, name: str, history: pd.DataFrame) -> None:
        """One training run's per-epoch table (epoch, seconds, loss, C-index ...)."""
        self.data["epochs"][name] = history.to_dict(orient="records")

    def parameters(self, name: str, model: torch.nn.Module) -> None:
        """Total and trainable parameter counts of a model."""
        params = list(model.parameters())
        self.data["parameters"][name] = {
            "total": int(sum(p.numel() for p in params)),
            "trainable": int(sum(p.numel() for p in params if p.requires_grad)),
        }

    def dataset(self, **summary) -> None:
        """Dataset facts (see :func:`manifest_summary`); merged into what is there."""
        self.data["dataset"].update(summary)

    def cases(self, summary) -> None:
        """A :class:`~radiopath.runner.RunSummary`: counts and every failure with its reason."""
        self.data["cases"][summary.stage] = {
            "done": len(summary.done),
            "skipped": len(summary.skipped),
            "failed": [{"case_id": c, "reason": r} for c, r in summary.failed],
            "seconds": round(summary.seconds, 3),
        }

    def note(self, text: str) -> None:
        """A sentence for the reader of the record."""
        self.data["notes"].append(str(text))

    # -- writing -----------------------------------------------------------------------------------
    def finish(self, error: BaseException | None = None) -> None:
        """Fill in status, environment, total time and peak memory."""
        if error is None:
            failed = any(entry["failed"] for entry in self.data["cases"].values())
            self.data["status"] = "finished with failed cases" if failed else "finished"
        else:
            self.data["status"] = "failed"
            self.data["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(traceback.format_exception(error))[-4000:],
            }
        self.data["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.data["timings"]["stage_total"] = round(time.perf_counter() - self._start, 3)
        self.data["determinism"] = determinism()
        self.data["packages"] = package_versions()
        self.data["git"] = git_state()
        self.data["hardware"] = hardware()
        self.data["peak_memory"] = peak_memory()

    def write(self) -> Path | None:
        """Write the record atomically; returns its path (None for a record without a folder)."""
        if self.path is None:
            return None
        atomic_write_text(json.dumps(_json_safe(self.data), indent=2, allow_nan=False) + "\n", self.path)
        return self.path


def active() -> RunRecord:
    """The record of the stage that is running, or a record that is never written."""
    return _ACTIVE.get() or RunRecord("none")


@contextlib.contextmanager
def run_record(stage: str, cfg=None, output_dir: str | Path | None = None,
               filename: str = RECORD_NAME) -> Iterator[RunRecord]:
    """Open a :class:`RunRecord` for a stage; it is written when the block ends, however it ends."""
    record = RunRecord(stage, cfg, output_dir, filename)
    token = _ACTIVE.set(record)
    try:
        yield record
    except BaseException as error:
        # sys.exit(0) is a normal end; anything else (including Ctrl-C) is a failed run
        record.finish(None if isinstance(error, SystemExit) and error.code in (0, None) else error)
        _write_quietly(record)
        raise
    else:
        record.finish()
        record.write()
    finally:
        _ACTIVE.reset(token)


def _write_quietly(record: RunRecord) -> None:
    """Write the record of a failing run without hiding the original error."""
    try:
        record.write()
    except Exception as error:  # noqa: BLE001 - e.g. the disk that made the stage fail is still full
        print(f"could not write the run record {record.path}: {error}", file=sys.stderr)

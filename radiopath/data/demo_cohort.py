"""The built-in demo cohort: real image files drawn from a known generative model.

Every number below is a parameter in ``conf/demo.yaml`` (names in brackets). Each
patient ``i`` draws from its own random streams, spawned from
``SeedSequence(seed)``, so a case depends only on ``(seed, i)`` and the parameters.

Latent and clinical variables
    ``z ~ N(0, 1)`` is the patient's aggressiveness. ``malignant ~ Bernoulli(0.75)``
    [cohort.malignant_fraction], ``age ~ N(62, 11)`` rounded and clipped to 25-90,
    ``sex`` is M with probability 0.65. Each modality gets its own pattern drive
    ``u_m = rho z + sqrt(1 - rho^2) e_m`` with independent ``e_m ~ N(0, 1)`` and
    ``rho = 0.7`` [latent.modality_correlation], so CT and slide carry
    complementary, not identical, information.

Planted patterns (malignant tumours only; benign ones have none)
    The number of regions per modality is ``Binomial(4, sigmoid(0.5 + 0 u_m))``
    [*_pattern.max_regions, count_intercept, count_slope]: chance, not risk. What
    carries the risk is how far the regions depart from normal tissue, their
    *severity* ``sev_m = 0.5 + 0.5 sigmoid(0 + 1.5 u_m)`` in [0.5, 1] (mean 0.75, sd
    0.13) [*_pattern.severity_min, severity_intercept, severity_slope], as the grade of
    a tumour is that of its worst focus, not its area. A method must therefore read
    the planted regions themselves: an average over the whole tumour or slide mixes
    their severity with their random extent.
    CT: ellipsoids of radius 0.25-0.4 x the tumour radius centred inside the
    tumour, clipped to it, filled with hyper-enhancing heterogeneous tissue at
    ``mean + sev (260 - mean)`` HU (``mean`` the tumour's own) plus ``sev x 70`` HU
    white noise. Slide: blobs of radius 133-333 µm centred on tissue, clipped to
    it, whose nuclei are ``1 + sev (f - 1)`` times denser, larger and darker for
    ``f`` = 2, 1.7 and 1.35, with ``sev x 0.15`` more cytoplasmic haematoxylin
    ("high grade"). ``f_ct`` is the fraction of tumour voxels and ``f_wsi`` the
    fraction of tissue pixels covered by pattern (means about 0.09 and 0.16 over
    malignant tumours, zero for benign ones); they are recorded in the truth but do
    not enter the hazard.

Images
    CT (int16 HU, 128x128x40 voxels of 0.8x0.8x2.5 mm): air, an elliptic body with
    subcutaneous fat and soft tissue, two kidneys (enhanced cortex, medulla) in
    perirenal fat, and a tumour grown from one kidney: an irregular ellipsoid of
    radius 12-24 mm at 60-100 HU with 25 HU texture when malignant, 8-13 mm at -70
    to -30 HU (fat-containing) with 5 HU texture when benign. Then a Gaussian
    point-spread function and 10 HU noise everywhere.
    Slide (0.5 µm/px, 4096x4096 level 0, i.e. 2 x 2 mm): one or two tissue pieces
    covering 40-60% of a white background, stained by Beer-Lambert mixing of
    haematoxylin and eosin (Macenko reference stain vectors; eosin OD 0.45 with 25%
    smooth variation, cytoplasmic haematoxylin 0.06, 0.15 more in the pattern);
    nuclei are an inhomogeneous Poisson process (7000 per mm², 30% log-scale
    variation) stamped with elliptical kernels of radius 3.2 µm and peak
    haematoxylin OD 1.1. At the demo's 64-µm analysis tiles (``wsi=demo``) a slide
    has ~400-600 tissue tiles of ~30 nuclei each; planted blobs span tens of tiles.
    The TIFF is deflate-compressed at level 1 [wsi.zlib_level] for speed (lossless).

Survival (proportional hazards, Weibull baseline)
    ``log_hazard = malignant (0.7 (sev_ct - 0.75) / 0.13 + 0.7 (sev_wsi - 0.75) / 0.13)
    + 0.15 (age - 60) / 10 - 1.0 (1 - malignant)`` [survival.*]; the severity
    references are fixed constants at the population mean and sd, so a patient's
    hazard does not depend on the rest of the cohort. Event time
    ``T = 1300 (E / exp(log_hazard))^(1 / 1.3)`` days with ``E ~ Exp(1)``; censoring
    at ``C = min(Exp(mean 6000), U(1000, 3650))`` days (loss to follow-up,
    administrative). ``os_time = min(T, C)`` (at least one day),
    ``os_event = [T <= C]``: about 60% of events are observed.

Labels (empty for benign tumours)
    ``isup_grade = 1 + #{c in (-1.3, 0.3, 2.0) : c < g}`` with
    ``g = (sev_wsi - 0.75) / 0.13 + 0.5 z + N(0, 0.5^2)``;
    ``high_grade = [ISUP >= 3]``;
    ``aggressive ~ Bernoulli(sigmoid(-0.6 + 1.2 z + 0.6 (size_mm - 40) / 10))``
    (about 45%). ``tumour_size_mm`` is the largest diameter of the tumour mask.

Clinical evaluation columns (a fifth random stream per patient, drawn after the others, so
the images, ``os_*`` and the labels above are those of a cohort without these columns)
    ``centre`` is A with probability 0.7, else B [clinical.centres, centre_weights]: a label
    only (same images), the external test cohort of ``evaluation=by_centre``.
    ``histology``: clear_cell / papillary / chromophobe with probabilities 0.7 / 0.2 / 0.1 for
    malignant tumours, angiomyolipoma for the (fat-containing) benign ones.
    ``tnm_stage`` (AJCC stage group 1-4, empty for benign) = 1 + #{c in (0.3, 1.1, 1.8) : c < s},
    ``s = 0.8 z + 0.8 (size_mm - 40) / 10 + N(0, 0.6^2)`` [clinical.stage_*].
    Recurrence and cause of death (malignant only; benign tumours neither recur nor kill):
    with the tumour log-hazard ``h = 0.7 (sev_ct - 0.75) / 0.13 + 0.7 (sev_wsi - 0.75) / 0.13``,
    a latent recurrence time ``R = 4000 (E / exp(h))^(1 / 1.3)`` days [recurrence.weibull_*];
    an observed death is from the tumour with probability ``sigmoid(0.5 + h)``
    [recurrence.cancer_death_*], and then ``R = min(R, U(0.3, 0.9) os_time)`` (a recurrence
    precedes a death from the tumour). ``dss_time = os_time``, ``dss_event`` = death from the
    tumour; ``rfs_time = min(R, os_time)``, ``rfs_event = [R < os_time]``. So
    ``dss_event <= rfs_event``, ``dss_event <= os_event`` and ``rfs_time <= os_time``.
    ``reader_a``, ``reader_b``, ``reader_c``: simulated radiologists' malignancy calls, blind to
    the image, with sensitivity / specificity 0.85 / 0.70, 0.80 / 0.80 and 0.92 / 0.55 [readers].

Files (paths in the manifest are relative to it)
    ``manifest.csv``, ``ct/{case}.nii.gz``, ``mask/{case}.nii.gz``,
    ``wsi/{case}.tif``, and the ground truth: ``truth/truth.csv`` (z, log_hazard,
    pattern fractions, region counts and severities, mask paths), ``truth/{case}_ct_pattern.nii.gz``
    (CT grid) and ``truth/{case}_wsi_pattern.png`` (255 = pattern, at
    ``wsi_pattern_downsample`` x level 0).
    ``slides=false`` writes a CT-only cohort: no ``wsi/`` files or slide truth, empty
    ``wsi`` cells. The slide masks are still drawn (not painted), so the random
    streams, outcomes and labels equal those of the same seed with slides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull
from tqdm import tqdm

from radiopath.config import CONF_DIR
from radiopath.data.pyramid_tiff import write_pyramidal_tiff
from radiopath.io import atomic_path, atomic_write, atomic_write_csv

DEFAULT_CONFIG = CONF_DIR / "demo.yaml"
# Keys of conf/demo.yaml that steer the run rather than the generative model.
RUN_KEYS = ("output_dir", "n_patients", "seed", "hydra")
DAYS_PER_MONTH = 365.25 / 12
# Optical density per unit stain, RGB: the reference H&E stain matrix of Macenko et al. (2009).
HAEMATOXYLIN = np.array([0.5626, 0.7201, 0.4062], np.float32)
EOSIN = np.array([0.2159, 0.8012, 0.5581], np.float32)
LABEL_COLUMNS = ("isup_grade", "high_grade", "aggressive", "tnm_stage")


def demo_config(**overrides) -> DictConfig:
    """Generator parameters from ``conf/demo.yaml`` with ``overrides`` (nested dicts) merged in.

    Unknown keys raise, so a misspelt parameter is never ignored.
    """
    base = OmegaConf.load(DEFAULT_CONFIG)
    params = OmegaConf.masked_copy(base, [key for key in base if key not in RUN_KEYS])
    OmegaConf.set_struct(params, True)
    cfg = OmegaConf.merge(params, overrides)
    _check_config(cfg)
    return cfg


def _check_config(cfg: DictConfig) -> None:
    if cfg.time_unit not in ("days", "months"):
        raise ValueError(f"time_unit must be days or months, got {cfg.time_unit!r}")
    if len(cfg.ct.shape) != 3 or len(cfg.ct.spacing) != 3 or min(cfg.ct.spacing) <= 0:
        raise ValueError("ct.shape and ct.spacing need three entries (x, y, z), spacing > 0")
    work, truth = cfg.wsi.work_downsample, cfg.wsi.truth_downsample
    if truth % work or any(size % truth for size in cfg.wsi.size_px):
        raise ValueError(
            f"wsi.size_px {list(cfg.wsi.size_px)} must be a multiple of wsi.truth_downsample ({truth}), "
            f"itself a multiple of wsi.work_downsample ({work})"
        )


# --------------------------------------------------------------------------- design


@dataclass(frozen=True)
class PatientDesign:
    """A patient's latent and clinical variables, drawn before any image."""

    case_id: str
    z: float
    malignant: bool
    age: int
    sex: str
    n_ct_regions: int
    n_wsi_regions: int
    ct_severity: float
    wsi_severity: float


def sample_design(rng: np.random.Generator, case_id: str, cfg: DictConfig) -> PatientDesign:
    """Draw z, malignancy, age, sex, and per modality the number and severity of planted regions."""
    cohort = cfg.cohort
    z = float(rng.standard_normal())
    malignant = bool(rng.random() < cohort.malignant_fraction)
    age = int(np.clip(np.rint(rng.normal(cohort.age_mean, cohort.age_sd)), *cohort.age_range))
    sex = "M" if rng.random() < cohort.male_fraction else "F"
    rho = cfg.latent.modality_correlation
    drive_ct, drive_wsi = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(2)
    # Counts are drawn for benign patients too, so every patient uses its stream alike.
    n_ct = _region_count(rng, drive_ct, cfg.ct_pattern)
    n_wsi = _region_count(rng, drive_wsi, cfg.wsi_pattern)
    return PatientDesign(case_id, z, malignant, age, sex, n_ct * malignant, n_wsi * malignant,
                         _severity(drive_ct, cfg.ct_pattern) * malignant,
                         _severity(drive_wsi, cfg.wsi_pattern) * malignant)


def _region_count(rng: np.random.Generator, drive: float, pattern: DictConfig) -> int:
    probability = _sigmoid(pattern.count_intercept + pattern.count_slope * drive)
    return int(rng.binomial(pattern.max_regions, probability))


def _severity(drive: float, pattern: DictConfig) -> float:
    """How far a modality's pattern goes from normal tissue, in [severity_min, 1]."""
    rise = _sigmoid(pattern.severity_intercept + pattern.severity_slope * drive)
    return float(pattern.severity_min + (1 - pattern.severity_min) * rise)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """Survival and labels of one patient (labels are None for benign tumours)."""

    log_hazard: float
    os_time_days: float
    os_event: int
    isup_grade: int | None
    high_grade: int | None
    aggressive: int | None


def log_hazard(ct_severity, wsi_severity, age, malignant, cfg: DictConfig):
    """The true log-hazard; works on scalars and on arrays of patients."""
    s = cfg.survival
    malignant_ = np.asarray(malignant, float)
    return (
        malignant_ * s.b_ct * _standardise(ct_severity, s.ct_severity_ref)
        + malignant_ * s.b_wsi * _standardise(wsi_severity, s.wsi_severity_ref)
        + s.b_age_per_decade * (np.asarray(age, float) - s.age_ref) / 10
        + s.b_benign * (1 - np.asarray(malignant, float))
    )


def _standardise(value, reference) -> np.ndarray:
    mean, sd = reference
    return (np.asarray(value, float) - mean) / sd


def sample_outcome(
    rng: np.random.Generator,
    design: PatientDesign,
    tumour_size_mm: float,
    cfg: DictConfig,
) -> Outcome:
    """Draw survival from the known hazard, and the grade and aggressiveness labels."""
    risk = float(log_hazard(design.ct_severity, design.wsi_severity, design.age, design.malignant, cfg))
    time, event = _sample_survival(rng, risk, cfg.survival)
    grade, aggressive = _sample_labels(rng, design, tumour_size_mm, cfg)
    if not design.malignant:
        return Outcome(risk, time, event, None, None, None)
    return Outcome(risk, time, event, grade, int(grade >= 3), aggressive)


def _sample_survival(rng: np.random.Generator, risk: float, s: DictConfig) -> tuple[float, int]:
    """Weibull proportional-hazards event time against random and administrative censoring."""
    event_time = s.weibull_scale_days * (rng.exponential() / np.exp(risk)) ** (1 / s.weibull_shape)
    censor_time = min(rng.exponential(s.censoring_mean_days), rng.uniform(*s.follow_up_days))
    return max(min(event_time, censor_time), 1.0), int(event_time <= censor_time)


def _sample_labels(
    rng: np.random.Generator, design: PatientDesign, size_mm: float, cfg: DictConfig
) -> tuple[int, int]:
    labels = cfg.labels
    score = (
        labels.grade_wsi_coef * _standardise(design.wsi_severity, cfg.survival.wsi_severity_ref)
        + labels.grade_z_coef * design.z
        + rng.normal(0, labels.grade_noise)
    )
    grade = 1 + int(np.sum(np.asarray(labels.grade_cutpoints) < score))
    logit = (
        labels.aggressive_intercept
        + labels.aggressive_z_coef * design.z
        + labels.aggressive_size_coef * (size_mm - labels.aggressive_size_ref_mm) / 10
    )
    return grade, int(rng.random() < _sigmoid(logit))


# --------------------------------------------------------------------------- clinical


@dataclass(frozen=True)
class Clinical:
    """Centre, histology, stage, DSS / RFS and reader calls of one patient (stage None for benign)."""

    centre: str
    histology: str
    tnm_stage: int | None
    dss_time_days: float
    dss_event: int
    rfs_time_days: float
    rfs_event: int
    reader_calls: dict[str, int]


def tumour_log_hazard(design: PatientDesign, cfg: DictConfig) -> float:
    """The severity terms of the log-hazard: what the tumour contributes (0 for benign tumours)."""
    s = cfg.survival
    return float(design.malignant * (s.b_ct * _standardise(design.ct_severity, s.ct_severity_ref)
                                     + s.b_wsi * _standardise(design.wsi_severity, s.wsi_severity_ref)))


def sample_clinical(rng: np.random.Generator, design: PatientDesign, outcome: Outcome, tumour_size_mm: float,
                    cfg: DictConfig) -> Clinical:
    """Draw the clinical-evaluation columns; every patient draws the same numbers from ``rng``."""
    c, r = cfg.clinical, cfg.recurrence
    centre = str(rng.choice(list(c.centres), p=list(c.centre_weights)))
    histology = str(rng.choice(list(c.malignant_histology), p=list(c.histology_weights)))
    stage_score = (c.stage_z_coef * design.z + c.stage_size_coef * (tumour_size_mm - c.stage_size_ref_mm) / 10
                   + rng.normal(0, c.stage_noise))
    reader_draws = {name: rng.random() for name in cfg.readers}
    death_draw, recurrence_draw, fraction = rng.random(), rng.exponential(), rng.uniform(*r.death_fraction)
    h = tumour_log_hazard(design, cfg)
    cancer_death = bool(design.malignant and outcome.os_event
                        and death_draw < _sigmoid(r.cancer_death_intercept + r.cancer_death_slope * h))
    recurrence = r.weibull_scale_days * (recurrence_draw / np.exp(h)) ** (1 / r.weibull_shape)
    if cancer_death:
        recurrence = min(recurrence, fraction * outcome.os_time_days)
    if not design.malignant:
        recurrence = np.inf
    calls = {}
    for name, draw in reader_draws.items():
        sensitivity, specificity = cfg.readers[name]
        calls[name] = int(draw < (sensitivity if design.malignant else 1 - specificity))
    return Clinical(
        centre=centre,
        histology=histology if design.malignant else str(c.benign_histology),
        tnm_stage=1 + int(np.sum(np.asarray(c.stage_cutpoints) < stage_score)) if design.malignant else None,
        dss_time_days=outcome.os_time_days,
        dss_event=int(cancer_death),
        rfs_time_days=float(min(recurrence, outcome.os_time_days)),
        rfs_event=int(recurrence < outcome.os_time_days),
        reader_calls=calls,
    )


# --------------------------------------------------------------------------- shared


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cell) -> np.ndarray:
    """Zero-mean, unit-variance noise with correlation length ``cell`` samples (per axis).

    White noise on a coarse grid spread onto the fine grid one axis at a time by a
    Gaussian weight matrix: a few small matrix products instead of a wide filter
    (or a spline zoom) over the full grid.
    """
    cell = np.maximum(np.broadcast_to(np.asarray(cell, float), (len(shape),)), 1.0)
    field = rng.standard_normal(tuple(int(np.ceil(n / c)) + 3 for n, c in zip(shape, cell))).astype(np.float32)
    for axis, (n, c) in enumerate(zip(shape, cell)):
        spread = _spread_matrix(n, field.shape[axis], c)
        field = np.moveaxis(np.tensordot(spread, field, axes=(1, axis)), 0, axis)
    return (field - field.mean()) / (field.std() + 1e-6)


def _spread_matrix(n_fine: int, n_coarse: int, cell: float) -> np.ndarray:
    # Fine samples sit one coarse cell in from the coarse grid's edge, so each has full support.
    position = (np.arange(n_fine) + 0.5) / cell + 1
    return np.exp(-0.5 * ((position[:, None] - np.arange(n_coarse)[None, :]) / 0.7) ** 2).astype(np.float32)


def _ellipse_rho2(grid, centre, semi_axes) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipse(oid) on an open grid."""
    return sum(((axis - c) / a) ** 2 for axis, c, a in zip(grid, centre, semi_axes))


# --------------------------------------------------------------------------- CT


@dataclass
class CTCase:
    """A rendered CT; arrays are (z, y, x), spacing is (x, y, z) mm as SimpleITK orders it."""

    image: np.ndarray
    mask: np.ndarray
    pattern: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def pattern_fraction(self) -> float:
        """Fraction of tumour voxels covered by the planted pattern."""
        return float(self.pattern.sum() / max(int(self.mask.sum()), 1))


def render_ct(rng: np.random.Generator, design: PatientDesign, cfg: DictConfig) -> CTCase:
    """Draw one CT volume with its tumour mask and planted-pattern mask."""
    spacing = np.asarray(cfg.ct.spacing, float)[::-1]  # (z, y, x) from here on
    shape = tuple(int(n) for n in cfg.ct.shape[::-1])
    grid = _grid_mm(shape, spacing)
    extent = np.asarray(shape) * spacing
    volume, inner, kidney_centres = _anatomy(grid, extent, cfg.ct)
    mask, radius = _tumour_mask(rng, grid, spacing, extent, inner, kidney_centres, design, cfg)
    if not mask.any():
        raise ValueError(f"{design.case_id}: the tumour fell outside the body; enlarge ct.shape or ct.spacing")
    pattern = _ct_pattern_mask(rng, grid, spacing, mask, radius, design.n_ct_regions, cfg.ct_pattern)
    _paint_tumour(rng, volume, mask, pattern, spacing, design.malignant, design.ct_severity, cfg)
    volume = ndimage.gaussian_filter(volume, cfg.ct.blur_mm / spacing)
    # The spots' local noise goes after the blur, so it stays sharp.
    volume[pattern] += design.ct_severity * cfg.ct_pattern.noise_hu * rng.standard_normal(int(pattern.sum()))
    volume += cfg.ct.noise_hu * rng.standard_normal(shape)
    image = np.clip(np.rint(volume), -1024, 3071).astype(np.int16)
    return CTCase(image, mask.astype(np.uint8), pattern.astype(np.uint8), tuple(spacing[::-1].tolist()))


def _grid_mm(shape: tuple[int, ...], spacing: np.ndarray) -> list[np.ndarray]:
    """Open grid of voxel-centre coordinates in mm, one broadcastable array per axis."""
    return [
        (np.arange(n) * step).reshape([-1 if i == axis else 1 for i in range(len(shape))])
        for axis, (n, step) in enumerate(zip(shape, spacing))
    ]


def _anatomy(grid, extent: np.ndarray, ct: DictConfig) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Air, body (fat then soft tissue), kidneys in perirenal fat; returns HU, body interior, kidney centres."""
    centre = extent / 2
    body_axes = np.array([np.inf, ct.body_fill[1] * centre[1], ct.body_fill[0] * centre[2]])
    body = _ellipse_rho2(grid, centre, body_axes) <= 1
    inner = _ellipse_rho2(grid, centre, body_axes - [0, ct.subcutaneous_fat_mm, ct.subcutaneous_fat_mm]) <= 1
    volume = np.full(body.shape, ct.air_hu, np.float32)
    volume[body] = ct.fat_hu
    volume[inner] = ct.soft_tissue_hu
    kidney_axes = np.asarray(ct.kidney_semi_axes_mm, float)[::-1]
    lateral, posterior = ct.kidney_offset_mm
    kidney_centres = [centre + [0, posterior, side * lateral] for side in (-1, 1)]
    for kidney in kidney_centres:
        volume[_ellipse_rho2(grid, kidney, kidney_axes + ct.perirenal_fat_mm) <= 1] = ct.fat_hu
        volume[_ellipse_rho2(grid, kidney, kidney_axes) <= 1] = ct.cortex_hu
        volume[_ellipse_rho2(grid, kidney, kidney_axes * ct.medulla_scale) <= 1] = ct.medulla_hu
    return volume, inner, kidney_centres


def _tumour_mask(rng, grid, spacing, extent, inner, kidney_centres, design, cfg) -> tuple[np.ndarray, float]:
    """An irregular ellipsoid grown from one kidney, kept inside the body; returns it and its radius."""
    t = cfg.tumour
    radius = rng.uniform(*(t.malignant_radius_mm if design.malignant else t.benign_radius_mm))
    axes = radius * (1 + t.elongation * rng.uniform(-1, 1, 3))
    kidney = kidney_centres[rng.integers(2)]
    kidney_axes = np.asarray(cfg.ct.kidney_semi_axes_mm, float)[::-1]
    direction = np.array([rng.uniform(-0.5, 0.5), *_unit_circle(rng)])
    direction /= np.linalg.norm(direction)
    reach = 1 / np.sqrt(np.sum((direction / kidney_axes) ** 2))  # centre-to-surface distance
    centre = kidney + direction * reach * rng.uniform(*t.offset_from_kidney)
    margin = axes * (1 + t.irregularity)
    centre = np.clip(centre, np.minimum(margin, extent / 2), np.maximum(extent - margin, extent / 2))
    rho = np.sqrt(_ellipse_rho2(grid, centre, axes))
    noise = smooth_noise(rng, rho.shape, t.irregularity_scale_mm / spacing)
    return _largest_component((rho + t.irregularity * noise < 1) & inner), radius


def _unit_circle(rng: np.random.Generator) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * np.pi)
    return np.sin(angle), np.cos(angle)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def _ct_pattern_mask(rng, grid, spacing, mask, radius, n_regions, pattern: DictConfig) -> np.ndarray:
    """Union of ``n_regions`` small ellipsoids centred inside the tumour, clipped to it."""
    planted = np.zeros(mask.shape, bool)
    if n_regions == 0:
        return planted
    # Depth inside the tumour, computed on its bounding box (padded so the box edge counts as outside).
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    depth = np.zeros(mask.shape)
    depth[box] = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    for _ in range(n_regions):
        region_radius = radius * rng.uniform(*pattern.radius_fraction)
        # Prefer centres at least half a region radius deep, so regions are not mere slivers.
        candidates = np.flatnonzero(depth >= min(region_radius / 2, depth.max()))
        centre = np.array(np.unravel_index(rng.choice(candidates), mask.shape)) * spacing
        axes = region_radius * (1 + 0.2 * rng.uniform(-1, 1, 3))
        planted |= _ellipse_rho2(grid, centre, axes) <= 1
    return planted & mask


def _paint_tumour(rng, volume, mask, pattern, spacing, malignant: bool, severity: float, cfg: DictConfig) -> None:
    """Fill the tumour with its textured attenuation and the pattern with its severity's HU (in place)."""
    t = cfg.tumour
    mean_hu = rng.uniform(*(t.malignant_hu if malignant else t.benign_hu))
    texture_hu = t.malignant_texture_hu if malignant else t.benign_texture_hu
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    texture = smooth_noise(rng, volume[box].shape, t.texture_scale_mm / spacing)
    inside = mask[box]
    volume[box][inside] = mean_hu + texture_hu * texture[inside]
    # Severity 1 reaches ct_pattern.hu; lower severities stay nearer the tumour's own attenuation.
    volume[pattern] = mean_hu + severity * (cfg.ct_pattern.hu - mean_hu)


def max_diameter_mm(mask: np.ndarray, spacing_xyz) -> float:
    """Largest distance between two voxel centres of a (z, y, x) mask, in mm."""
    points = np.argwhere(mask) * np.asarray(spacing_xyz, float)[::-1]
    if len(points) > 4:
        # Only hull vertices can be the farthest pair; QJ copes with flat masks.
        points = points[ConvexHull(points, qhull_options="QJ").vertices]
    gaps = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((gaps**2).sum(-1)).max(initial=0.0))


# --------------------------------------------------------------------------- slide


@dataclass
class Slide:
    """A slide: level-0 RGB (None when not painted) and the tissue and pattern masks at ``wsi.work_downsample``."""

    rgb: np.ndarray | None
    tissue: np.ndarray
    pattern: np.ndarray

    @property
    def pattern_fraction(self) -> float:
        """Fraction of tissue area covered by the planted pattern."""
        return float(self.pattern.sum() / max(int(self.tissue.sum()), 1))


def render_slide(rng: np.random.Generator, design: PatientDesign, cfg: DictConfig, *, paint: bool = True) -> Slide:
    """Draw one H&E-like slide with its planted "high grade" regions.

    ``paint=False`` draws the tissue and pattern masks only (what the outcomes need)
    and skips the image: the masks, hence the pattern fraction, are the same either way.
    """
    w = cfg.wsi
    shape = (w.size_px[1] // w.work_downsample, w.size_px[0] // w.work_downsample)
    um_per_px = w.mpp * w.work_downsample
    tissue = _tissue_mask(rng, shape, um_per_px, w)
    pattern = _slide_pattern_mask(rng, tissue, design.n_wsi_regions, um_per_px, cfg.wsi_pattern)
    painted = _paint_slide(rng, tissue, pattern, design.wsi_severity, cfg) if paint else None
    return Slide(painted, tissue, pattern)


def _tissue_mask(rng, shape: tuple[int, int], um_per_px: float, w: DictConfig) -> np.ndarray:
    """One or two irregular elliptic tissue pieces, each in its own strip of the slide."""
    count = int(rng.integers(w.tissue_regions[0], w.tissue_regions[1] + 1))
    coverage = rng.uniform(*w.tissue_fraction)
    grid = np.ogrid[: shape[0], : shape[1]]
    noise = smooth_noise(rng, shape, w.edge_scale_um / um_per_px)
    long_axis = int(shape[1] >= shape[0])
    strip = np.array(shape, float)
    strip[long_axis] /= count
    # 0.42 of the strip leaves room for the ragged edge.
    limit = 0.42 * strip
    tissue = np.zeros(shape, bool)
    for j in range(count):
        aspect = rng.uniform(0.6, 1.6) * limit[0] / limit[1]
        area = coverage * shape[0] * shape[1] / count / np.pi
        axes = np.minimum([np.sqrt(area * aspect), np.sqrt(area / aspect)], limit)
        origin = np.zeros(2)
        origin[long_axis] = j * strip[long_axis]
        centre = origin + rng.uniform(axes, strip - axes)
        rho = np.sqrt(_ellipse_rho2(grid, centre, axes))
        tissue |= rho + w.edge_irregularity * noise < 1
    return tissue


def _slide_pattern_mask(rng, tissue, n_regions: int, um_per_px: float, pattern: DictConfig) -> np.ndarray:
    """Union of ``n_regions`` rotated irregular blobs centred on tissue, clipped to it."""
    planted = np.zeros(tissue.shape, bool)
    if n_regions == 0 or not tissue.any():
        return planted
    ys, xs = np.nonzero(tissue)
    y, x = np.ogrid[: tissue.shape[0], : tissue.shape[1]]
    noise = smooth_noise(rng, tissue.shape, pattern.radius_um[0] / um_per_px)
    for _ in range(n_regions):
        pick = rng.integers(len(ys))
        radius = rng.uniform(*pattern.radius_um) / um_per_px
        axes = radius * (1 + 0.25 * rng.uniform(-1, 1, 2))
        sin, cos = _unit_circle(rng)
        along, across = (y - ys[pick]) * sin + (x - xs[pick]) * cos, (y - ys[pick]) * cos - (x - xs[pick]) * sin
        rho = np.sqrt((along / axes[0]) ** 2 + (across / axes[1]) ** 2)
        planted |= rho + pattern.irregularity * noise < 1
    return planted & tissue


def _paint_slide(rng, tissue: np.ndarray, pattern: np.ndarray, severity: float, cfg: DictConfig) -> np.ndarray:
    """Level-0 RGB by Beer-Lambert mixing: smooth stain fields at work resolution, nuclei at full.

    The pattern's changes (cytoplasm, nuclear density, size, darkness) are scaled by ``severity``.
    """
    w, p = cfg.wsi, cfg.wsi_pattern
    factor = w.work_downsample
    stain_cell = w.stain_scale_um / (w.mpp * factor)
    soft_tissue = ndimage.gaussian_filter(tissue.astype(np.float32), 1.0)
    soft_pattern = ndimage.gaussian_filter(pattern.astype(np.float32), 1.0)
    eosin = soft_tissue * w.eosin_od * _variation(rng, tissue.shape, stain_cell, w.stain_variation)
    haematoxylin = soft_tissue * (w.cytoplasm_od + severity * p.cytoplasm_od * soft_pattern)
    background = w.background_od * _variation(rng, tissue.shape, stain_cell, w.background_variation)
    nuclei = _nuclei_od(rng, tissue, pattern, severity, cfg)
    # Transmission factorises: exp(-(smooth + nuclei)) = exp(-smooth) * exp(-nuclei), so the
    # smooth part is exponentiated at work resolution and broadcast over each block.
    blocks = nuclei.reshape(tissue.shape[0], factor, tissue.shape[1], factor)
    buffer = np.empty_like(blocks)
    rgb = np.empty((*nuclei.shape, 3), np.uint8)
    for channel in range(3):
        smooth_od = HAEMATOXYLIN[channel] * haematoxylin + EOSIN[channel] * eosin + background
        np.multiply(blocks, -HAEMATOXYLIN[channel], out=buffer)
        np.exp(buffer, out=buffer)
        buffer *= (255 * np.exp(-smooth_od))[:, None, :, None]
        rgb[..., channel] = buffer.reshape(nuclei.shape)
    return rgb


def _variation(rng, shape: tuple[int, int], cell: float, amount: float) -> np.ndarray:
    """A smooth multiplicative factor around 1 (never negative)."""
    return np.maximum(1 + amount * smooth_noise(rng, shape, cell), 0)


def _nuclei_od(rng, tissue: np.ndarray, pattern: np.ndarray, severity: float, cfg: DictConfig) -> np.ndarray:
    """Level-0 haematoxylin density of nuclei drawn as an inhomogeneous Poisson process."""
    w, p = cfg.wsi, cfg.wsi_pattern
    # Each pattern factor moves from 1 (normal) to its configured value as severity goes to 1.
    density_factor, nucleus_scale, haematoxylin_factor = (
        1 + severity * (f - 1) for f in (p.nuclei_density_factor, p.nucleus_scale, p.haematoxylin_factor))
    factor = w.work_downsample
    per_cell = w.nuclei_per_mm2 * (w.mpp * 1e-3 * factor) ** 2
    modulation = np.exp(w.nuclei_variation * smooth_noise(rng, tissue.shape, w.stain_scale_um / (w.mpp * factor)))
    density = tissue * per_cell * modulation * np.where(pattern, density_factor, 1.0)
    cells = np.repeat(np.arange(density.size), rng.poisson(density).ravel())
    rows, cols = np.divmod(cells, tissue.shape[1])
    ys = rows * factor + rng.integers(0, factor, cells.size)
    xs = cols * factor + rng.integers(0, factor, cells.size)
    in_pattern = pattern.ravel()[cells]
    radius_px = w.nucleus_radius_um / w.mpp
    kernels = _nucleus_bank(rng, radius_px, w.nucleus_jitter, w.kernel_bank) + _nucleus_bank(
        rng, radius_px * nucleus_scale, p.nucleus_jitter, w.kernel_bank
    )
    kernel_ids = rng.integers(0, w.kernel_bank, cells.size) + w.kernel_bank * in_pattern
    intensity = w.haematoxylin_od * rng.uniform(0.8, 1.1, cells.size) * np.where(in_pattern, haematoxylin_factor, 1.0)
    shape = (tissue.shape[0] * factor, tissue.shape[1] * factor)
    return _stamp(shape, ys, xs, kernel_ids, kernels, intensity)


def _nucleus_bank(rng, radius_px: float, jitter: float, count: int) -> list[np.ndarray]:
    """``count`` elliptical nucleus kernels with anti-aliased edges and chromatin grain."""
    kernels = []
    for _ in range(count):
        radius = radius_px * (1 + jitter * rng.uniform(-1, 1))
        elongation = np.sqrt(rng.uniform(1.0, 1.6))
        half = int(np.ceil(radius * elongation)) + 1
        y, x = np.mgrid[-half : half + 1, -half : half + 1]
        sin, cos = _unit_circle(rng)
        rho = np.hypot((x * cos + y * sin) / (radius * elongation), (y * cos - x * sin) / (radius / elongation))
        coverage = np.clip((1 - rho) * radius / elongation + 0.5, 0, 1)
        kernels.append((coverage * rng.uniform(0.7, 1.0, coverage.shape)).astype(np.float32))
    return kernels


def _stamp(shape, ys, xs, kernel_ids, kernels, intensity) -> np.ndarray:
    """Sum ``intensity``-scaled kernels centred at (ys, xs) onto a zero canvas of ``shape``."""
    pad = max(kernel.shape[0] for kernel in kernels) // 2
    width = shape[1] + 2 * pad
    indices, weights = [np.zeros(0, np.int64)], [np.zeros(0)]
    for kernel_id, kernel in enumerate(kernels):
        chosen = np.flatnonzero(kernel_ids == kernel_id)
        ky, kx = np.nonzero(kernel)
        half = kernel.shape[0] // 2
        # The padded canvas makes every offset land in bounds: no per-pixel clipping.
        offsets = (ky - half) * width + (kx - half)
        centres = (ys[chosen] + pad) * width + xs[chosen] + pad
        indices.append((centres[:, None] + offsets[None, :]).ravel())
        weights.append((intensity[chosen, None] * kernel[ky, kx][None, :]).ravel())
    canvas = np.bincount(np.concatenate(indices), np.concatenate(weights), minlength=(shape[0] + 2 * pad) * width)
    return canvas.reshape(shape[0] + 2 * pad, width)[pad:-pad, pad:-pad].astype(np.float32)


# --------------------------------------------------------------------------- files


def write_sitk(array: np.ndarray, spacing_xyz, path: Path) -> None:
    """Write a (z, y, x) array as an image with ``spacing_xyz`` atomically.

    SimpleITK picks the format from the extension, so the temporary file keeps it.
    """
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def _write_mask_png(mask: np.ndarray, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        Image.fromarray(mask.astype(np.uint8) * 255).save(handle, format="PNG")


def _block_majority(mask: np.ndarray, factor: int) -> np.ndarray:
    h, w = mask.shape[0] // factor, mask.shape[1] // factor
    blocks = mask[: h * factor, : w * factor].reshape(h, factor, w, factor)
    return blocks.mean(axis=(1, 3)) >= 0.5


# --------------------------------------------------------------------------- cohort


def generate_case(root: Path, case_id: str, seed: np.random.SeedSequence, cfg: DictConfig) -> tuple[dict, dict]:
    """Draw and write one patient's files; returns its manifest row and truth row."""
    # The fifth stream came last: spawn(5)'s first four children are spawn(4)'s.
    design_rng, ct_rng, slide_rng, outcome_rng, clinical_rng = (np.random.default_rng(s) for s in seed.spawn(5))
    design = sample_design(design_rng, case_id, cfg)
    ct = render_ct(ct_rng, design, cfg)
    # Without slides the masks are still drawn, so the random streams match the full cohort's.
    slide = render_slide(slide_rng, design, cfg, paint=cfg.slides)
    size_mm = max_diameter_mm(ct.mask, ct.spacing)
    outcome = sample_outcome(outcome_rng, design, size_mm, cfg)
    clinical = sample_clinical(clinical_rng, design, outcome, size_mm, cfg)

    files = {"ct": f"ct/{case_id}.nii.gz", "mask": f"mask/{case_id}.nii.gz", "wsi": ""}
    truth_files = {"ct_pattern": f"{case_id}_ct_pattern.nii.gz", "wsi_pattern": ""}
    write_sitk(ct.image, ct.spacing, root / files["ct"])
    write_sitk(ct.mask, ct.spacing, root / files["mask"])
    write_sitk(ct.pattern, ct.spacing, root / "truth" / truth_files["ct_pattern"])
    w = cfg.wsi
    if cfg.slides:
        files["wsi"], truth_files["wsi_pattern"] = f"wsi/{case_id}.tif", f"{case_id}_wsi_pattern.png"
        write_pyramidal_tiff(
            root / files["wsi"], slide.rgb, w.mpp, tuple(w.downsamples), w.tile, zlib_level=w.zlib_level
        )
        truth_mask = _block_majority(slide.pattern, w.truth_downsample // w.work_downsample)
        _write_mask_png(truth_mask, root / "truth" / truth_files["wsi_pattern"])

    manifest_row = {
        "case_id": case_id,
        **files,
        "os_time": _format_time(outcome.os_time_days, cfg.time_unit),
        "os_event": outcome.os_event,
        "malignant": int(design.malignant),
        "isup_grade": outcome.isup_grade,
        "high_grade": outcome.high_grade,
        "aggressive": outcome.aggressive,
        "age": design.age,
        "sex": design.sex,
        "tumour_size_mm": round(size_mm, 1),
        "centre": clinical.centre,
        "tnm_stage": clinical.tnm_stage,
        "histology": clinical.histology,
        "dss_time": _format_time(clinical.dss_time_days, cfg.time_unit),
        "dss_event": clinical.dss_event,
        "rfs_time": _format_time(max(clinical.rfs_time_days, 1.0), cfg.time_unit),
        "rfs_event": clinical.rfs_event,
        **{f"reader_{name}": call for name, call in clinical.reader_calls.items()},
    }
    truth_row = {
        "case_id": case_id,
        "z": round(design.z, 6),
        "log_hazard": round(outcome.log_hazard, 6),
        "ct_pattern_fraction": round(ct.pattern_fraction, 6),
        "wsi_pattern_fraction": round(slide.pattern_fraction, 6),
        "n_ct_regions": design.n_ct_regions,
        "n_wsi_regions": design.n_wsi_regions,
        "ct_severity": round(design.ct_severity, 6),
        "wsi_severity": round(design.wsi_severity, 6),
        **truth_files,
        "wsi_pattern_downsample": w.truth_downsample,
    }
    return manifest_row, truth_row


def _format_time(days: float, unit: str) -> int | float:
    return int(round(days)) if unit == "days" else round(days / DAYS_PER_MONTH, 2)


def make_demo_cohort(output_dir: str | Path, n_patients: int, seed: int, progress: bool = False, **params) -> Path:
    """Write the demo cohort under ``output_dir``; returns the manifest path.

    ``params`` override ``conf/demo.yaml`` per group, e.g. ``ct={"shape": [64, 64, 20]}``.
    The manifest is written last, so its presence means the cohort is complete.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    cfg = demo_config(**params)
    root = Path(output_dir)
    width = max(3, len(str(n_patients - 1)))
    seeds = np.random.SeedSequence(seed).spawn(n_patients)
    rows = [
        generate_case(root, f"demo-{i:0{width}d}", patient_seed, cfg)
        for i, patient_seed in enumerate(tqdm(seeds, desc="demo patients", unit="patient", disable=not progress))
    ]
    truth = pd.DataFrame([truth_row for _, truth_row in rows])
    manifest = pd.DataFrame([manifest_row for manifest_row, _ in rows])
    for column in LABEL_COLUMNS:
        manifest[column] = manifest[column].astype("Int64")  # empty, not NaN-as-float, for benign
    atomic_write_csv(truth, root / "truth" / "truth.csv")
    atomic_write_csv(manifest, root / "manifest.csv")
    return root / "manifest.csv"


def describe_cohort(manifest_path: str | Path, time_unit: str) -> str:
    """A short human-readable summary of a generated cohort."""
    frame = pd.read_csv(manifest_path)
    malignant = frame[frame["malignant"] == 1]
    grades = malignant["isup_grade"].value_counts().reindex(range(1, 5), fill_value=0)
    root = Path(manifest_path).parent
    return "\n".join(
        [
            f"Demo cohort: {len(frame)} patients in {root}",
            f"  events: {int(frame['os_event'].sum())}/{len(frame)} observed, "
            f"median os_time {frame['os_time'].median():g} {time_unit}",
            f"  malignant: {len(malignant)}, benign: {len(frame) - len(malignant)}",
            f"  ISUP 1/2/3/4: {'/'.join(str(n) for n in grades)}, high grade: {int(malignant['high_grade'].sum())}",
            f"  aggressive: {int(malignant['aggressive'].sum())} of {len(malignant)} malignant",
            f"  centres: {', '.join(f'{k} {v}' for k, v in frame['centre'].value_counts().sort_index().items())}; "
            f"DSS events {int(frame['dss_event'].sum())}, RFS events {int(frame['rfs_event'].sum())}",
            f"  files: {root / 'manifest.csv'}, ct/, mask/{', wsi/' if frame['wsi'].notna().any() else ''}; "
            f"ground truth in {root / 'truth'}",
        ]
    )

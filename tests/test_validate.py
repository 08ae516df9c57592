"""Method-validation benchmark: its scores against hand-computed values, the table, one tiny real run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import initialize_config_dir

from conftest import TINY_MODEL
from radiopath.layout import RunFolder
from radiopath.validate import scores
from radiopath.validate.benchmark import CONF_DIR, changed_keys, check_config, compose_stage, run_benchmark
from radiopath.validate.planted import FAMILIES, truth_path, write_planted_cohort

# Tiny graphs: the run checks the plumbing, not the method.
TINY_COHORT = ["+cohort.pathology_nodes=[30,60]", "+cohort.radiology_nodes=[15,30]",
               "+cohort.pathology_dim=6", "+cohort.radiology_dim=4", "+cohort.region_fraction=0.2"]


def test_importance_auroc_of_perfect_reversed_tied_and_single_class_importance():
    truth = torch.tensor([True, True, False, False, False])
    perfect = torch.tensor([0.9, 0.8, 0.1, 0.2, 0.0])
    assert scores.importance_auroc(importance=perfect, truth=truth) == 1.0
    assert scores.importance_auroc(importance=-perfect, truth=truth) == 0.0
    assert scores.importance_auroc(importance=torch.zeros(5), truth=truth) == 0.5
    # 2 planted x 3 other pairs, planted ranked higher in 4 of 6 (one tie counts 1/2): 4.5 / 6
    mixed = torch.tensor([0.5, 0.1, 0.3, 0.1, 0.0])
    assert scores.importance_auroc(importance=mixed, truth=truth) == pytest.approx(4.5 / 6)
    assert math.isnan(scores.importance_auroc(importance=perfect, truth=torch.zeros(5, dtype=torch.bool)))
    assert math.isnan(scores.importance_auroc(importance=perfect, truth=torch.ones(5, dtype=torch.bool)))
    with pytest.raises(ValueError, match="shape"):
        scores.importance_auroc(importance=perfect[:4], truth=truth)


def test_kept_fraction_counts_planted_nodes_with_positive_importance():
    truth = torch.tensor([True, True, True, True, False])
    importance = torch.tensor([0.0, 0.3, 0.0, 0.2, 0.5])  # 0 = dropped by pooling
    assert scores.kept_fraction(importance=importance, truth=truth) == 0.5
    assert math.isnan(scores.kept_fraction(importance=importance, truth=torch.zeros(5, dtype=torch.bool)))


def test_own_risk_c_index_on_test_rows_and_nan_without_risk():
    survival = pd.DataFrame({"os_time": [1.0, 2.0, 3.0, 4.0], "os_event": [1, 1, 0, 1]},
                            index=pd.Index(["a", "b", "c", "d"], name="case_id"))
    vectors = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "split": ["test", "test", "test", "train"],
                            "risk": [3.0, 1.0, 2.0, 0.0]})
    # comparable pairs (a,b), (a,c), (b,c): concordant a>b, a>c; discordant b<c -> 2 / 3
    assert scores.own_risk_c_index(vectors=vectors, survival=survival) == pytest.approx(2 / 3)
    assert math.isnan(scores.own_risk_c_index(vectors=vectors.assign(risk=np.nan), survival=survival))


def test_node_scores_average_over_patients_where_defined(tmp_path):
    truth_dir, run = tmp_path / "truth", RunFolder(tmp_path / "run")
    truths = {"a": torch.tensor([True, False, False]), "b": torch.tensor([False, False, False])}
    importance = {"a": torch.tensor([0.0, 0.0, 0.5]), "b": torch.tensor([0.2, 0.0, 0.1])}
    for case_id in truths:
        for path in (truth_path(truth_dir, "pathology", case_id), run.importance(0, case_id)):
            path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(truths[case_id], truth_path(truth_dir, "pathology", case_id))
        torch.save({"pathology": importance[case_id]}, run.importance(0, case_id))
    pooled = scores.node_scores(run=run, fold=0, truth_dir=truth_dir, case_ids=["a", "b"], pooling=True)
    # a: planted node tied with one other, below the third: AUROC 0.25; dropped -> kept 0; b: undefined
    assert pooled["auroc_pathology"] == 0.25 and pooled["kept_pathology"] == 0.0
    assert math.isnan(pooled["auroc_radiology"]) and math.isnan(pooled["kept_radiology"])
    attention = scores.node_scores(run=run, fold=0, truth_dir=truth_dir, case_ids=["a", "b"], pooling=False)
    assert attention["auroc_pathology"] == 0.25 and math.isnan(attention["kept_pathology"])
    mean = scores.node_scores(run=RunFolder(tmp_path / "no-importance"), fold=0, truth_dir=truth_dir, case_ids=["a"],
                              pooling=False)
    assert all(math.isnan(v) for v in mean.values())


def test_tables_show_mean_sd_and_never_zero_for_missing(tmp_path):
    rows = [("shift", "mean", k, "coxph_c_index", v) for k, v in enumerate([0.7, 0.8])]
    rows += [("shift", "mean", k, "own_c_index", math.nan) for k in range(2)]
    rows += [("shift", "sparra", k, "auroc_pathology", v) for k, v in enumerate([0.9, math.nan])]
    rows += [("shift", "oracle", k, "coxph_c_index", v) for k, v in enumerate([0.6, 0.7])]
    table = scores.write_tables(fold_rows=pd.DataFrame(rows, columns=scores.FOLD_COLUMNS), output_dir=tmp_path,
                                families=["shift"], aggregators=["mean", "sparra"])
    lines = table.splitlines()
    assert lines[0].startswith("| family | aggregator | own-risk C | CoxPH C | oracle C | AUROC pathology")
    mean_row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert mean_row[:5] == ["shift", "mean", "N/A", "0.750 ± 0.071", "0.650 ± 0.071"]
    sparra_row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert sparra_row[2:6] == ["N/A", "N/A", "0.650 ± 0.071", "0.900 (1/2 folds)"]
    assert "0.000" not in table and (tmp_path / "table.md").read_text(encoding="utf-8") == table

    csv_text = (tmp_path / "table.csv").read_text(encoding="utf-8")
    assert csv_text.splitlines()[0] == "family,aggregator,metric,mean,std,n_folds"
    assert "shift,mean,own_c_index,N/A,N/A,0" in csv_text
    summary = pd.read_csv(tmp_path / "table.csv").set_index(["aggregator", "metric"])
    assert summary.loc[("mean", "coxph_c_index"), "mean"] == pytest.approx(0.75)
    assert summary.loc[("sparra", "auroc_pathology"), "n_folds"] == 1


@pytest.mark.parametrize("override, key", [
    ("families=[shift,nonsense]", "families"),
    ("aggregators=[mean,gnn]", "aggregators"),
    ("aggregators=[mean,mean]", "aggregators"),
    ("jobs=0", "jobs"),
    ("+aggregator_overrides.gnn=[]", "aggregator_overrides"),
    ("train_overrides=['model=abmil']", "train_overrides"),
    ("survival_overrides=['models=[RSF]']", "survival_overrides"),
])
def test_a_bad_setting_fails_at_start_naming_its_key(compose_config, override, key):
    with pytest.raises(ValueError, match=f"^{key}"):
        check_config(cfg=compose_config("validate", [override]), families=FAMILIES)


def test_bare_null_names_the_null_family(compose_config):
    cfg = compose_config("validate", ["families=[shift,null]"])
    assert check_config(cfg=cfg, families=FAMILIES)[0] == ["shift", "null"]


def test_changed_keys_are_dotted_and_include_added_and_removed_ones():
    old = {"a": 1, "model": {"kwargs": {"hidden": 8, "ratio": 0.2}}, "gone": [1]}
    new = {"a": 1, "model": {"kwargs": {"hidden": 16, "ratio": 0.2}}, "added": None}
    assert changed_keys(old=old, new=new) == ["added", "gone", "model.kwargs.hidden"]
    assert changed_keys(old=old, new=old) == []


def test_stage_configs_compose_also_inside_a_running_hydra_app():
    # `python -m radiopath.validate` is a hydra app: hydra is initialised when the stages are composed
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        inside = compose_stage(name="train", overrides=["model=abmil"])
    assert inside == compose_stage(name="train", overrides=["model=abmil"]) and inside.model.name == "abmil"


@pytest.mark.slow
def test_tiny_benchmark_runs_every_aggregator_through_train_and_survival(compose_config, tmp_path, capsys):
    cfg = compose_config("validate", [
        "families=[shift,null]", "n_patients=30", f"output_dir={tmp_path / 'validate'}", "jobs=2", *TINY_COHORT,
    ])
    cfg.train_overrides = ["training.epochs=2", "folds.n_folds=2"]
    cfg.aggregator_overrides.abmil = TINY_MODEL
    cfg.aggregator_overrides.sparra = TINY_MODEL
    cfg.survival_overrides = ["estimators.CoxPH.alpha=[1.0]", "tuning.inner_folds=2"]
    outcome = run_benchmark(cfg=cfg, generate=write_planted_cohort, families=FAMILIES)
    assert outcome.failed == []
    progress = capsys.readouterr().out
    assert progress.count("shift/") == 3 and progress.count("null/") == 3 and "[6/6]" in progress

    out = tmp_path / "validate"
    folds = (out / "shift" / "mean" / "folds.csv").read_text()
    assert all((out / "shift" / a / "folds.csv").read_text() == folds for a in ("abmil", "sparra"))
    # keep_default_na=False: pandas would read the family "null" as a missing value
    summary = pd.read_csv(out / "table.csv", keep_default_na=False, na_values=["N/A"])
    summary = summary.set_index(["family", "aggregator", "metric"])
    for family in ("shift", "null"):
        for aggregator in ("mean", "abmil", "sparra", "oracle"):
            assert np.isfinite(summary.loc[(family, aggregator, "coxph_c_index"), "mean"])
        for aggregator in ("abmil", "sparra"):
            assert np.isfinite(summary.loc[(family, aggregator, "own_c_index"), "mean"])
            assert np.isfinite(summary.loc[(family, aggregator, "auroc_pathology"), "mean"])
        assert summary.loc[(family, "mean", "own_c_index"), "n_folds"] == 0
        assert summary.loc[(family, "mean", "auroc_pathology"), "n_folds"] == 0
        assert summary.loc[(family, "abmil", "kept_pathology"), "n_folds"] == 0
        assert 0 <= summary.loc[(family, "sparra", "kept_pathology"), "mean"] <= 1
    rows = [line for line in outcome.table.splitlines() if line.startswith("| shift") or line.startswith("| null")]
    assert len(rows) == 6

    marker = out / "null" / "sparra" / "fold1" / "vectors.csv"
    before = marker.stat().st_mtime_ns
    cfg.jobs = 1
    again = run_benchmark(cfg=cfg, generate=write_planted_cohort, families=FAMILIES)
    assert again.failed == [] and again.table == outcome.table and marker.stat().st_mtime_ns == before
    rerun = capsys.readouterr().out
    assert rerun.count("; finished before: ") == rerun.count("train, survival") == 6, rerun

    # finished work made with other settings is refused at start, naming its folder and what changed
    cfg.n_patients = 40
    cfg.aggregator_overrides.sparra = ["model.kwargs.hidden=4"]
    with pytest.raises(ValueError, match="other settings") as refused:
        run_benchmark(cfg=cfg, generate=write_planted_cohort, families=FAMILIES)
    assert f"{out / 'null'} (cohort: n_patients)" in str(refused.value)
    assert f"{out / 'shift' / 'sparra'} (train: model.kwargs.attention_dim, model.kwargs.hidden)" in str(refused.value)

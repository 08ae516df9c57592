"""One shape for every command: thin hydra entries over ``stage.run``, config errors named, no dead imports."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import radiopath
from radiopath.config import CONF_DIR
from radiopath.errors import ConfigError

PACKAGE = Path(radiopath.__file__).parent
# python -m radiopath.<command> -> its entry module and the stage module whose run(cfg) it calls
COMMANDS = {
    "demo": ("demo.py", "radiopath.data.stage"),
    "encode": ("encode.py", "radiopath.encoders.stage"),
    "build_graphs": ("build_graphs.py", "radiopath.graphs.stage"),
    "train": ("train.py", "radiopath.training.stage"),
    "survival": ("survival/__main__.py", "radiopath.survival.stage"),
    "report": ("report/__main__.py", "radiopath.report.stage"),
    "checklist": ("checklist.py", "radiopath.report.checklist"),
    "export": ("export.py", "radiopath.report.export"),
    "classify": ("classify.py", "radiopath.classification.stage"),
    "validate": ("validate/__main__.py", "radiopath.validate.stage"),
}
ENTRY_MODULES = {"radiopath." + path.removesuffix(".py").replace("/", ".") for path, _ in COMMANDS.values()}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts)


def imported_modules(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_a_thin_hydra_entry_over_its_stage_run(command):
    path, stage = COMMANDS[command]
    source = (PACKAGE / path).read_text()
    tree = ast.parse(source)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions == ["main"], f"{path}: the entry defines only main()"
    assert "@hydra.main(" in source and "run_entry(" in source
    assert f"from {stage} import" in source and "run" in source
    radiopath_imports = {m for m in imported_modules(tree) if m.startswith("radiopath")}
    assert radiopath_imports <= {stage, f"{stage}.run", f"{stage}.record_name", f"{stage}.output_dir_for",
                                 "radiopath.entry", "radiopath.entry.run_entry", "radiopath.layout",
                                 "radiopath.layout.RECORD_NAME", "radiopath.layout.part_filename"}, path


def test_no_module_imports_an_entry_module():
    offenders = []
    for path in modules():
        imports = imported_modules(ast.parse(path.read_text()))
        offenders += [f"{path.relative_to(PACKAGE)} imports {m}" for m in imports & ENTRY_MODULES]
    assert not offenders


def test_every_launcher_named_in_a_docstring_exists():
    # build_graphs' docstring once named submitit_slurm and joblib, which skip the project's launcher configs
    launchers = {p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")}
    named = {(path.name, m) for path in modules() for m in re.findall(r"hydra/launcher=(\w+)", path.read_text())}
    assert named, "the entries document their launchers"
    assert {(name, m) for name, m in named if m not in launchers} == set()


def unused_names(tree: ast.Module) -> list[str]:
    """Imported names and module-level loggers that nothing in the module uses."""
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    used |= {n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    exported = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            exported = {elt.value for elt in node.value.elts}
    unused = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                if name not in used and name not in exported and name != "annotations":
                    unused.append(f"import {name} (line {node.lineno})")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = ast.unparse(node.value.func)
            for target in node.targets:
                if call == "logging.getLogger" and isinstance(target, ast.Name) and target.id not in used:
                    unused.append(f"logger {target.id} (line {node.lineno})")
    return unused


def test_no_module_keeps_unused_imports_or_loggers():
    problems = {}
    for path in modules():
        source = path.read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        found = [u for u in unused_names(tree) if "noqa" not in lines[int(u.rsplit("line ", 1)[1][:-1]) - 1]]
        if found and path.name != "__init__.py":
            problems[str(path.relative_to(PACKAGE))] = found
    assert problems == {}


def test_a_trained_fold_without_comparable_test_pairs_is_not_called_untrained():
    from radiopath.training.stage import fold_score_text

    trained = OmegaConf.create({"model": {"name": "sparra"}})
    untrained = OmegaConf.create({"model": {"name": "mean"}})
    assert fold_score_text(trained, 0.61234) == "0.612"
    assert "untrained" not in fold_score_text(trained, float("nan"))
    assert "no comparable pair" in fold_score_text(trained, float("nan"))
    assert "untrained" in fold_score_text(untrained, float("nan"))


def test_survival_on_a_run_folder_without_folds_says_what_is_missing(compose_config, tmp_path):
    from radiopath.survival.stage import run_survival

    def survival_config(*overrides):
        return compose_config("survival", [f"output_dir={tmp_path / 'out'}", *overrides])

    table = tmp_path / "features.csv"
    table.write_text("case_id,os_time,os_event,f0\na,1.0,1,0.5\nb,2.0,0,0.1\n")
    (tmp_path / "run").mkdir()
    for overrides in ([f"features={table}", f"run_dir={tmp_path / 'run'}"], [f"run_dir={tmp_path / 'run'}"]):
        with pytest.raises(ConfigError, match=r"run_dir: .*has no folds.csv: train there first"):
            run_survival(survival_config(*overrides))
    with pytest.raises(ConfigError, match=r"run_dir: .*does not exist"):
        run_survival(survival_config(f"run_dir={tmp_path / 'elsewhere'}"))


@pytest.mark.slow
def test_a_misspelt_aggregator_stops_train_at_start_naming_the_key(run_command, tmp_path):
    done = run_command("train", "model.name=spara", f"output_dir={tmp_path / 'run'}",
                       f"data.manifest={tmp_path / 'absent.csv'}", cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.name" in done.stderr and "spara" in done.stderr and "sparra" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_run_config_records_the_cohort_paths_absolute(compose_config, tmp_path, monkeypatch):
    # The report reads graphs and features through the run's config.yaml: relative paths only
    # worked from the folder the training ran in.
    from radiopath.training.stage import write_run_config

    monkeypatch.chdir(tmp_path)
    cfg = compose_config("train", ["data.manifest=cohort/manifest.csv", "data.graph_dir=graphs/cohort"])
    write_run_config(cfg, tmp_path / "config.yaml")
    written = OmegaConf.load(tmp_path / "config.yaml")
    assert written.data.manifest == str(tmp_path / "cohort" / "manifest.csv")
    assert written.data.graph_dir == str(tmp_path / "graphs" / "cohort")
    assert written.data.features_dir == str(tmp_path / "cohort" / "features")
    assert "fold" not in written


def test_the_wheel_carries_every_config_file(tmp_path):
    # `pip install .` (not editable) must run the commands from any folder: the hydra
    # configuration has to travel inside the package.
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    shutil.copytree(PACKAGE, source / "radiopath", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("radiopath-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("radiopath/conf/")}
    expected = {f"radiopath/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert expected and expected == packaged

# radiopath: `make demo` runs the pipeline on the built-in demo cohort,
# `make test` runs the test suite. Both set up .venv first and are safe to rerun.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.radiopath-installed
# Text files are UTF-8 whatever the machine's locale (reports and logs carry µ, ±, ↑).
export PYTHONUTF8 := 1
DEMO := data/demo
# The classification cohort: more patients than the survival demo, so that grade and
# aggressiveness (malignant cases only) have enough cases per class for a test split + 5 folds.
DEMO_CLASSIFY := data/demo_classify
CLASSIFY_TR := malignancy_tr grade_tr aggressiveness_tr
# Deep pipelines with demo-size training (fewer epochs than conf/classify/pipeline/*.yaml).
DEMO_DEEP_EPOCHS := pipelines.rgcnn.kwargs.epochs=10 pipelines.cr_rf.kwargs.rgcnn.kwargs.epochs=10 \
	pipelines.cr_tr_rf.kwargs.rgcnn.kwargs.epochs=10 pipelines.simclr_rf.kwargs.epochs=20 \
	pipelines.simclr_mlp.kwargs.epochs=20
# The paper's radiopathomics comparison: one training run per aggregator, same folds.
DEMO_RUNS := radiopathomics_mean radiopathomics_abmil radiopathomics_sparra

.PHONY: setup demo test clean-demo

comma := ,
space := $(subst ,, )

setup: $(STAMP)

# Order matters: pyradiomics has no wheel for Python 3.11 and must be built
# without build isolation against numpy; torch and torchvision come together
# from the index because no CPU torchvision matches the CPU torch file.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet numpy versioneer wheel "setuptools>=68"
	$(PIP) install --quiet --no-build-isolation "pyradiomics==3.0.1"
	$(PIP) install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

# The cohort is generated once, and again (with its features and graphs) when
# conf/demo.yaml changes; the manifest is written last, so it marks a complete
# cohort. Encoding and graph building skip the cases they have already done.
# Training skips finished folds, so a rerun only redoes what is missing.
# SPARRA's vectors skip the univariate Cox filter, as in the paper.
demo: $(DEMO)/manifest.csv $(DEMO_CLASSIFY)/manifest.csv
	$(PY) -m radiopath.build_graphs data.manifest=$(DEMO)/manifest.csv output_dir=graphs/demo
	for run in $(DEMO_RUNS); do $(PY) -m radiopath.train experiment=$$run || exit 1; done
	$(PY) -m radiopath.survival run_dir=runs/demo/radiopathomics_mean
	$(PY) -m radiopath.survival run_dir=runs/demo/radiopathomics_abmil
	$(PY) -m radiopath.survival run_dir=runs/demo/radiopathomics_sparra selection.univariate_cox=false
	$(PY) -m radiopath.report run_dirs=[$(subst $(space),$(comma),$(addprefix runs/demo/,$(DEMO_RUNS)))] output=reports/demo
	for task in $(CLASSIFY_TR); do $(PY) -m radiopath.classify experiment_classify=$$task \
	    data.manifest=$(DEMO_CLASSIFY)/manifest.csv data.name=demo_classify \
	    output_dir=reports/demo/classify/$$task || exit 1; done
	$(PY) -m radiopath.classify experiment_classify=malignancy_deep $(DEMO_DEEP_EPOCHS) \
	    output_dir=reports/demo/classify/malignancy_deep

$(DEMO)/manifest.csv: $(STAMP) conf/demo.yaml
	rm -rf $(DEMO) graphs/demo runs/demo reports/demo
	$(PY) -m radiopath.demo output_dir=$(DEMO)

$(DEMO_CLASSIFY)/manifest.csv: $(STAMP) conf/demo.yaml
	rm -rf $(DEMO_CLASSIFY) reports/demo/classify
	$(PY) -m radiopath.demo output_dir=$(DEMO_CLASSIFY) n_patients=150 seed=1

test: $(STAMP)
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO) $(DEMO_CLASSIFY) graphs/demo runs/demo reports/demo

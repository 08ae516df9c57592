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
CLASSIFY_TR := malignancy_tr grade_tr aggressiveness_tr aggressiveness_tr_centres aggressiveness_tr_nested
DEMO_CLASSIFY_ARGS := data.manifest=$(DEMO_CLASSIFY)/manifest.csv data.name=demo_classify
# Demo slides: 128-px (64 um) tiles and clustering that keeps a few hundred nodes a slide.
DEMO_WSI := wsi=demo graph/pathology=slidegraph_demo
# One small step keeps the timm ViT path exercised: a randomly initialised ViT-Tiny at the
# tiles' own 128 px encodes one demo slide (shard 0 of 32) into
# features/pathology/timm-vit_tiny_patch16_224/ (the graphs use the pathomics features).
DEMO_VIT := wsi=demo encoder/pathology=timm encoder.pathology.name=timm:vit_tiny_patch16_224 \
	+encoder.pathology.kwargs.img_size=128 +encoder.pathology.kwargs.input_size=128 num_shards=32 shard=0
# The paper's radiopathomics comparison: one training run per aggregator, same folds.
DEMO_RUNS := radiopathomics_mean radiopathomics_abmil radiopathomics_sparra

.PHONY: setup demo demo-survival demo-classify test clean-demo

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
	$(PY) scripts/fetch_test_slides.py $(VENV)/test-slides || echo "warning: a real test slide is missing (tests/test_vendor_slides.py skips its tests)"
	touch $(STAMP)

# The cohort is generated once, and again (with its features and graphs) when
# radiopath/conf/demo.yaml changes; the manifest is written last, so it marks a complete
# cohort. Encoding and graph building skip the cases they have already done.
# Training skips finished folds, so a rerun only redoes what is missing.
# The demo's slides are analysed in 64-um tiles (wsi=demo) with matching clustering
# (graph/pathology=slidegraph_demo), so a slide graph has a few hundred nodes.
# SPARRA's vectors skip the univariate Cox filter, as in the paper.
# The survival part and the CT classification part are independent: they run side by
# side (one core each), the classification part logging to reports/demo/classify/demo.log.
demo: $(STAMP)
	@start=$$(date +%s); $(MAKE) --no-print-directory -j2 demo-survival demo-classify && \
	    echo "make demo: finished in $$(( $$(date +%s) - start )) s (after set-up): reports/demo/report.html"

demo-survival: $(DEMO)/manifest.csv
	$(PY) -m radiopath.build_graphs data.manifest=$(DEMO)/manifest.csv output_dir=graphs/demo $(DEMO_WSI)
	$(PY) -m radiopath.encode data.manifest=$(DEMO)/manifest.csv modalities=[pathology] $(DEMO_VIT)
	for run in $(DEMO_RUNS); do $(PY) -m radiopath.train experiment=$$run || exit 1; done
	$(PY) -m radiopath.survival run_dir=runs/demo/radiopathomics_mean
	$(PY) -m radiopath.survival run_dir=runs/demo/radiopathomics_abmil
	$(PY) -m radiopath.survival run_dir=runs/demo/radiopathomics_sparra selection.univariate_cox=false
	$(PY) -m radiopath.report run_dirs=[$(subst $(space),$(comma),$(addprefix runs/demo/,$(DEMO_RUNS)))] output=reports/demo

# The six deep pipelines at demo size first (radiopath/conf/experiment_classify/malignancy_deep_demo.yaml):
# they compute every case's inputs once, including the demo radiomics the three TR tasks read.
demo-classify: $(DEMO_CLASSIFY)/manifest.csv
	@mkdir -p reports/demo/classify && echo "CT classification: log in reports/demo/classify/demo.log"
	@{ $(PY) -m radiopath.classify experiment_classify=malignancy_deep_demo $(DEMO_CLASSIFY_ARGS) \
	    output_dir=reports/demo/classify/malignancy_deep_demo && \
	  for task in $(CLASSIFY_TR); do $(PY) -m radiopath.classify experiment_classify=$$task classify/radiomics=demo \
	    $(DEMO_CLASSIFY_ARGS) output_dir=reports/demo/classify/$$task || exit 1; done; } \
	  > reports/demo/classify/demo.log 2>&1 || { echo "CT classification failed: see reports/demo/classify/demo.log"; exit 1; }
	@echo "CT classification: done, reports in reports/demo/classify/"

# reports/demo/classify belongs to the classification cohort, which may be running beside this.
$(DEMO)/manifest.csv: $(STAMP) radiopath/conf/demo.yaml
	rm -rf $(DEMO) graphs/demo runs/demo
	test ! -d reports/demo || find reports/demo -mindepth 1 -maxdepth 1 ! -name classify -exec rm -rf {} +
	$(PY) -m radiopath.demo output_dir=$(DEMO)

$(DEMO_CLASSIFY)/manifest.csv: $(STAMP) radiopath/conf/demo.yaml
	rm -rf $(DEMO_CLASSIFY) reports/demo/classify
	$(PY) -m radiopath.demo output_dir=$(DEMO_CLASSIFY) n_patients=150 seed=1 slides=false

test: $(STAMP)
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO) $(DEMO_CLASSIFY) graphs/demo runs/demo reports/demo

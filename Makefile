# Two commands on a fresh machine: `make demo` (the main job on embedded data) and `make test`.
# Both create ./.venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint system-deps monailabel-env monaideploy-env ohif-env ohif-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,openvino]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tinyusfm-monai demo

system-deps:
	bash .ci/system-deps.sh

# The MONAI Label server test runs a real, unmodified monailabel 0.8.5 from its own venv (.venv-monailabel):
# its pins (numpy<2, jsonschema<4, sam2) cannot share ours. Built once; rebuilt when pyproject.toml changes.
monailabel-env: $(STAMP)
	bash tinyusfm_monai/monailabel/setup_env.sh

# The MONAI Deploy app (tinyusfm_monai/monaideploy) runs in its own venv (.venv-monaideploy): the App SDK 4.x brings
# Holoscan (~570 MB) that nothing else needs. Holoscan runs on CPU-only machines. Rebuilt when pyproject.toml changes.
monaideploy-env: $(STAMP)
	bash tinyusfm_monai/monaideploy/setup_env.sh

# OHIF 3.13 in headless Chromium on a study in Orthanc (tests/test_ohif_viewer.py). Not part of `make test`:
# OHIF 3.13 cannot open a DICOM SEG of an ultrasound image without patient geometry (docs/hospital_it.md, "Shown in
# OHIF"), so its overlay check ends as an expected failure, and the check costs ~250 MB of downloads per fresh
# machine (Chromium, the viewer) for that.
ohif-env:
	OHIF=1 bash .ci/system-deps.sh
	bash tests/ohif/setup.sh

ohif-check: $(STAMP) ohif-env
	TINYUSFM_OHIF=1 $(PY) -m pytest -q -s tests/test_ohif_viewer.py

# ruff lint and format check (configured in pyproject.toml); part of `make test`
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) system-deps monailabel-env monaideploy-env lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-monailabel .venv-monaideploy .pytest_cache

# Quick start: `make demo` (install + run on the sample clip), `make test` (install + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install demo test benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,cluster]"
	@rm -f $(VENV)/.installed-*
	@touch $@

SHARED ?= $(or $(STREAM_PIPELINE_SHARED),../shared)

demo: install
	$(BIN)/stream-pipeline fetch-samples intel_parking_lot yolo11n_int8_openvino_model
	$(BIN)/stream-pipeline run samples/videos/intel_parking_lot.mp4 --out runs/demo --overwrite
	@# The sample is top-down footage, where COCO YOLO finds few cars; with ../shared present,
	@# a dash-cam clip shows the brand stage too (local test footage, not redistributed).
	@if [ -f $(SHARED)/videos/dashcam_vw_close.mp4 ]; then \
		$(BIN)/stream-pipeline run $(SHARED)/videos/dashcam_vw_close.mp4 --out runs/demo-dashcam --overwrite; fi

test: install
	$(BIN)/python -m pytest

benchmark: install
	$(BIN)/stream-pipeline benchmark

clean:
	rm -rf runs .pytest_cache

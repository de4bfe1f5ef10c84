# Two commands for a newcomer: `make repro` (set up, run the pipeline) and `make test` (set up, run tests).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup ffmpeg repro test bench clean

setup: ffmpeg $(VENV)/.installed

# ffmpeg/ffprobe from apt when missing (Debian/Ubuntu); other systems: install ffmpeg yourself.
ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

repro: setup
	dvc repro

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/decode.py

clean:
	rm -rf $(VENV) data artifacts reports

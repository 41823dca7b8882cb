# The two commands of the README:
#   make run    install everything and run Cairn on one data directory
#   make test   install everything and run every check and test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
DATA ?= /var/lib/cairn
LISTEN ?= 127.0.0.1:8080
MOUNT ?= /srv/cairn
SSH ?= 0.0.0.0:2222
RSYNCD ?= 0.0.0.0:873
SMB ?= 0.0.0.0:445
BIN := $(VENV)/bin
PYFUSE3 := 3.5.0
# What building and booting the disk image takes (make image, and its test in make test).
IMAGE_PACKAGES := mmdebstrap gdisk dosfstools mtools xxd grub-common grub-pc-bin grub-efi-amd64-bin qemu-utils qemu-system-x86 ovmf
APT_PACKAGES := python3 python3-venv python3-dev gcc pkg-config fuse3 libfuse3-dev patch \
	postgresql redis-server rsync attr acl restic litmus curl chromium qemu-utils e2fsprogs \
	openssh-server openssh-client bubblewrap samba smbclient libnss-wrapper

.PHONY: run test setup system image image-tools lint unit bench bench-s3 bench-image bench-doors bench-smb bench-restore bench-scale bench-trees bench-pages bench-search bench-boot pyfuse3

# The whole appliance: web UI, API and WebDAV on LISTEN; the mount at MOUNT; rsync over SSH
# on SSH, the rsync daemon on RSYNCD and the SMB shares on SMB (empty keeps that door shut).
run: setup
	$(BIN)/cairn --data $(DATA) serve --listen $(LISTEN) --mount $(MOUNT) \
		$(if $(SSH),--ssh $(SSH)) $(if $(RSYNCD),--rsyncd $(RSYNCD)) $(if $(SMB),--smb $(SMB))

test: setup image-tools lint unit

# The bootable disk image (appliance/system/build-image.sh): OUT/cairn.raw and OUT/cairn.qcow2.
IMAGE_OUT ?= build/image
image: setup image-tools
	appliance/system/build-image.sh $(IMAGE_OUT)

setup: system $(VENV)/.installed

# Installs the Debian packages once; the stamp records which list was installed. Samba installed
# here is for the appliance alone, which runs its own smbd: the package's own services, which
# would take port 445, are stopped and disabled (a Samba that was there before is left alone).
system: $(VENV)/.system

$(VENV)/.system: Makefile
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
		if echo " $$missing " | grep -q " samba " && [ -d /run/systemd/system ]; then \
			systemctl disable --now smbd nmbd samba-ad-dc >/dev/null 2>&1 || true; \
		fi; \
	else echo "not root or no apt-get: install $(APT_PACKAGES) yourself"; fi
	mkdir -p $(VENV) && touch $@

image-tools: $(VENV)/.image-tools

$(VENV)/.image-tools: Makefile
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(IMAGE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	else echo "not root or no apt-get: install $(IMAGE_PACKAGES) yourself"; fi
	mkdir -p $(VENV) && touch $@

$(VENV)/.installed: pyproject.toml vfs/pyfuse3-fallocate.patch vfs/pyfuse3-noflush.patch $(VENV)/.system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(MAKE) pyfuse3
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# pyfuse3 from its source with a fallocate handler added (vfs/pyfuse3-fallocate.patch):
# the release registers none, so the kernel would answer fallocate(2) itself; and with
# FileInfo.noflush (vfs/pyfuse3-noflush.patch), so a read-only open costs no FLUSH on close.
pyfuse3:
	rm -rf $(VENV)/src && mkdir -p $(VENV)/src
	$(BIN)/python -m pip download -q --no-deps --no-binary :all: -d $(VENV)/src pyfuse3==$(PYFUSE3)
	tar -xzf $(VENV)/src/pyfuse3-$(PYFUSE3).tar.gz -C $(VENV)/src
	patch -s -d $(VENV)/src/pyfuse3-$(PYFUSE3) -p1 < vfs/pyfuse3-fallocate.patch
	patch -s -d $(VENV)/src/pyfuse3-$(PYFUSE3) -p1 < vfs/pyfuse3-noflush.patch
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(VENV)/src/pyfuse3-$(PYFUSE3)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit:
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/engine_bench.py

bench-s3: setup
	$(BIN)/python bench/s3_bench.py

bench-image: setup
	$(BIN)/python bench/image_bench.py

bench-doors: setup
	$(BIN)/python bench/doors_bench.py

bench-smb: setup
	$(BIN)/python bench/smb_bench.py

bench-pages: setup
	$(BIN)/python bench/page_bench.py

bench-search: setup
	$(BIN)/python bench/search_bench.py

# Boots the image `make image` built (or IMAGE=FILE) under qemu without KVM.
bench-boot: setup image-tools
	$(BIN)/python bench/boot_bench.py

bench-restore: setup
	$(BIN)/python bench/restore_bench.py

bench-scale: setup
	$(BIN)/python bench/scale_bench.py

bench-trees: setup
	$(BIN)/python bench/tree_bench.py

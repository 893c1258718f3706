# The compose lab. `make up` does everything on a machine with Docker and Rust:
# makes sure Docker answers, builds the static binaries for the engine's
# architecture, makes the Debian base image when no registry answers, builds
# the images and runs the lab in the foreground (Ctrl-C stops it).
#
#   make up [SERVER_MODE=iterative|parallel|preforked|evented] [SERVER_PROCESSES=N]
#           [UP_OPTIONS=-d]      -d: in the background
#   make crowd [CLIENTS=N]     with the lab up, in another terminal
#   make down                  removes the lab's containers, network and volume
#   make e2e                   the end-to-end check of all four server models
#   make lint                  every static check, compose validation included

SERVER_MODE ?= preforked
CLIENTS ?= 8
COMPOSE_PROJECT_NAME ?= tcpfile
export SERVER_MODE SERVER_PROCESSES COMPOSE_PROJECT_NAME

# Looked up when used, after `engine` may have installed Docker.
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
ARCH = $(shell docker version -f '{{.Server.Arch}}')
RUST_TARGET_amd64 = x86_64-unknown-linux-musl
RUST_TARGET_arm64 = aarch64-unknown-linux-musl
# What the static binaries are made from: they are built again only when one
# of these is newer than them, so a machine without Rust can run the lab from
# binaries built elsewhere.
SOURCES = $(shell git ls-files src Cargo.toml Cargo.lock build.rs 2>/dev/null)

.PHONY: up engine binaries base-image images crowd down e2e lint

up: images
	mkdir -p captures downloads
	$(COMPOSE) up $(UP_OPTIONS)

engine:
	ci/docker-engine.sh

binaries: engine
	$(MAKE) dist/$(ARCH)/SHA256SUMS

dist/%/SHA256SUMS: $(SOURCES)
	ci/build-static.sh $(RUST_TARGET_$*)

base-image: engine
	ci/debian-base-image.sh

images: binaries base-image
	docker/build-images.sh

crowd:
	docker/crowd.sh $(CLIENTS)

down:
	$(COMPOSE) --profile crowd down --volumes --remove-orphans

e2e:
	ci/compose-e2e.sh

lint: engine
	ci/lint.sh
	docker/lint.sh

# syntax=docker/dockerfile:1
#
# npm-watchdog container image.
#
#   docker build -t npm-watchdog .
#   docker run -d --name npm-watchdog --read-only \
#     -v npm-watchdog-state:/var/lib/npm-watchdog \
#     -v /etc/npm-watchdog/npm-token:/run/secrets/npm-token:ro \
#     -v /etc/npm-watchdog/config.toml:/etc/npm-watchdog/config.toml:ro \
#     -p 127.0.0.1:9858:9858 npm-watchdog
#
# The token file must be readable, and a bind-mounted state folder writable, by uid 65532 (the image's
# user); a named volume gets that owner from the image. The config file is optional: without
# it the daemon runs on built-in defaults plus the NPM_WATCHDOG_* variables below. Variables override the
# file, so to use another listen address, token path or state path, pass `-e NPM_WATCHDOG_...`.
# The root filesystem can be read-only: the daemon writes only its SQLite state (state.db, -wal, -shm,
# and SQLite's own temporary files, sent to the same folder by SQLITE_TMPDIR) to the state volume.
#
# The runtime stage takes everything from the stage named `build` (/out/npm-watchdog, /out/state). A
# binary built elsewhere can take its place without compiling here: a named build context replaces the
# stage of that name, e.g.
#   docker buildx build --target runtime --build-context build=DIR .
# with DIR/out/npm-watchdog and DIR/out/state; tests/container.rs builds and runs the image that way with
# podman build (which also needs --format docker: its default OCI format drops the HEALTHCHECK).

ARG RUST_VERSION=1.95

# --- build ----------------------------------------------------------------------------------------------
# Debian 12 (bookworm) like the runtime image, so the binary links against the same glibc.
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Exactly the command the tests run (tests/packaging.rs): a release build from the locked dependencies.
# The binary links only glibc and libgcc_s (rusqlite bundles SQLite, TLS is rustls): no libssl.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/npm-watchdog /out/npm-watchdog \
    && install -d -m 0700 /out/state

# --- runtime --------------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc_s, CA certificates (rustls uses the platform's roots, read from
# /etc/ssl/certs) and a nonroot user (65532), no shell and no package manager. The health check is
# the binary's own `healthcheck` verb, so no curl is needed.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/npm-watchdog /usr/local/bin/npm-watchdog
# The state folder exists in the image owned by the nonroot user, so a new named volume mounted there
# starts with that owner.
COPY --from=build --chown=65532:65532 /out/state /var/lib/npm-watchdog

# Inside a container the loopback address cannot be reached from outside, so the metrics server listens
# on every address of the container; publish the port to the host's loopback (-p 127.0.0.1:9858:9858)
# or to a network only Prometheus reaches.
# MALLOC_ARENA_MAX: see systemd/npm-watchdog.service (one allocator peak instead of one per thread).
# DL3064 flags the word TOKEN in a variable name; the value is the path of the secret file, never the token.
# hadolint ignore=DL3064
ENV NPM_WATCHDOG_SERVER__LISTEN=0.0.0.0:9858 \
    NPM_WATCHDOG_REGISTRY__TOKEN_FILE=/run/secrets/npm-token \
    NPM_WATCHDOG_STATE__PATH=/var/lib/npm-watchdog/state.db \
    SQLITE_TMPDIR=/var/lib/npm-watchdog \
    MALLOC_ARENA_MAX=1

USER 65532:65532
VOLUME ["/var/lib/npm-watchdog"]
EXPOSE 9858

# /healthz answers 200 while the daemon runs; `healthcheck` reads the same settings (the ENV above) and
# asks it on loopback. Exit 0 healthy, 1 not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["npm-watchdog", "healthcheck"]

# No --config: the daemon reads /etc/npm-watchdog/config.toml when it exists (mount it there) and runs on
# its defaults and the environment when it does not; `--config PATH` would make a missing file an error.
ENTRYPOINT ["npm-watchdog"]
CMD ["run"]

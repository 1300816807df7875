# piecework's stages in one image: `docker compose` (docker-compose.yml) runs one container
# per stage from it, or `piecework daemon` runs them all in one. Built with the same scripts as the README and .ci/run, so CI exercises
# the install and build steps even where no Docker engine runs.

# --- build: the README's two steps, tests and fuzzers left out -------------------------
FROM debian:bookworm AS build
WORKDIR /src
# The dependency layer is cached until the package list changes.
COPY scripts/install-deps scripts/install-deps
RUN ./scripts/install-deps --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN ./scripts/build -DPW_BUILD_TESTS=OFF -DPW_FUZZ=OFF -DPW_INTEGRATION=OFF

# --- runtime: the executables and the shared libraries they load, nothing else ---------
FROM debian:bookworm-slim AS runtime
COPY scripts/install-deps /tmp/install-deps
RUN /tmp/install-deps --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps
# A fixed uid, so volume ownership is the same on every host; never root.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/piecework --create-home \
        --shell /usr/sbin/nologin piecework \
    && mkdir -p /downloads /state /torrents \
    && chown piecework:piecework /downloads /state
COPY --from=build /src/build/bin/ /usr/local/bin/
USER piecework
WORKDIR /var/lib/piecework
VOLUME ["/downloads", "/state"]
# control, pieces, verified, reads (ZeroMQ), metrics (HTTP, when PW_METRICS_PORT is set),
# the RPC, and the port peers reach the workers on.
EXPOSE 5555 5556 5557 5558 9100 9091 6881
CMD ["piecework", "--help"]

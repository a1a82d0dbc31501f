# syntax=docker/dockerfile:1
#
# pullsecret-injector container image.
#   docker build -t pullsecret-injector:0.1.0 .
# Runtime: distroless (glibc, no shell), runs as uid/gid 65532 (nonroot).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /build

# 1. Dependencies only: build the locked dependency graph against a dummy
#    crate so that this layer is cached until Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
# The manifest declares bench targets; stubs satisfy it (benches are never built here).
RUN mkdir src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/micro.rs \
 && echo 'fn main() {}' > benches/loadgen.rs \
 && cargo build --locked --release --bin pullsecret-injector \
 && rm -rf src \
    target/release/pullsecret-injector* \
    target/release/deps/pullsecret_injector-* \
    target/release/deps/libpullsecret_injector-* \
    target/release/.fingerprint/pullsecret-injector-*

# 2. The real build. `touch` makes sure cargo sees the sources as newer than
#    the dummy build even if COPY kept older mtimes.
COPY src ./src
# `serve` embeds the example config as its default.
COPY examples ./examples
RUN find src -type f -exec touch {} + \
 && cargo build --locked --release --bin pullsecret-injector \
 && cp target/release/pullsecret-injector /pullsecret-injector \
 && /pullsecret-injector --help >/dev/null

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="pullsecret-injector" \
      org.opencontainers.image.description="Kubernetes admission webhook that injects imagePullSecrets by image registry"
COPY --from=builder /pullsecret-injector /pullsecret-injector
USER 65532:65532
# 8443: HTTPS webhook (/mutate, /validate, /healthz, /readyz); 9090: /metrics
EXPOSE 8443 9090
ENTRYPOINT ["/pullsecret-injector"]
CMD ["serve", "--config", "/etc/pullsecret-injector/config.yaml"]

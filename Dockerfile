# syntax=docker/dockerfile:1
# The one image every role runs: `tractor controller` (the operator),
# `tractor optimize` (its Jobs), `tractor serve` (the version pods) and
# `tractor route` (the routers). The pods choose the role with `args`.
#
#   docker build -t ghcr.io/tractor-dev/tractor:0.1.0 .
#   docker build --build-arg FEATURES=otel -t ghcr.io/tractor-dev/tractor:0.1.0-otel .
#
# FEATURES: cargo features of the binary, space- or comma-separated; `otel`
# exports a span per request to an OTLP collector (docs/operator.md, "Traces").

FROM rust:1.95-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds
# (BuildKit); the binary is copied out of the cached target directory
# without its line tables (kept in the profile for profilers and
# backtraces on a developer's machine), which are most of its size. Its
# symbols stay, so a panic's backtrace still names functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tractor --features "$FEATURES" \
 && strip --strip-debug -o /usr/local/bin/tractor target/release/tractor

# glibc and libgcc, nothing else: no shell, no package manager. The
# `nonroot` user is uid/gid 65532, the runAsUser of every pod the operator
# creates (src/controller/objects.rs) and of the chart's Deployment.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/tractor /usr/local/bin/tractor
USER 65532:65532
# tractor serve: 8000; tractor route: 8080 and 9090; tractor controller: 8081.
EXPOSE 8000 8080 8081 9090
ENTRYPOINT ["/usr/local/bin/tractor"]
CMD ["--help"]

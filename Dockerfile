# syntax=docker/dockerfile:1
# hivegraph: the GraphQL gateway, in a distroless Debian 12 image, as a non-root user.
#   docker build -t ghcr.io/hivegraph/hivegraph:0.1.0 .
# The entrypoint is the `hivegraph` binary: `serve` by default; the Kubernetes manifests run
# `migrate` in an init container. scripts/lib/deploy-checks.sh checks this file against the
# build (paths, binary name, dynamic libraries present in the runtime distribution).

# --- build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
# npm: build.rs embeds the GraphiQL assets from web/node_modules (pinned by
# web/package-lock.json), installed here before the build (build.rs never runs npm).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY dataloaders ./dataloaders
COPY kube-emulator ./kube-emulator
COPY migrations ./migrations
COPY web ./web
COPY src ./src
RUN npm ci --prefix web --no-audit --no-fund --ignore-scripts
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hivegraph --bin hivegraph \
 && install -D -m 0755 target/release/hivegraph /out/hivegraph

# --- runtime -------------------------------------------------------------------------------
# glibc, libgcc_s and CA certificates: everything the binary links against (see
# scripts/lib/deploy-checks.sh); migrations are embedded in the binary.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/hivegraph /usr/local/bin/hivegraph
USER 65532:65532
ENV HIVEGRAPH_MODE=production \
    HIVEGRAPH_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hivegraph"]
CMD ["serve"]

# hello-app image: a glibc binary on distroless/cc, non-root (uid 65532).
#   docker build -f Dockerfile.app -t hello-app .
#   docker run --rm -p 8080:8080 -e POD_NAME=hello-1 hello-app
# Dependencies are cooked by cargo-chef first (see Dockerfile.proxy).
FROM rust:1.95-bookworm AS chef
RUN cargo install --locked --version 0.1.78 cargo-chef
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
COPY third_party third_party
RUN cargo chef cook --release --locked --recipe-path recipe.json -p hello-app
COPY . .
RUN bash scripts/build-release.sh hello-app

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hello-app /usr/local/bin/hello-app
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
# No shell in the image: the binary asks its own /healthz.
HEALTHCHECK --interval=5s --timeout=2s --start-period=2s --retries=3 \
    CMD ["/usr/local/bin/hello-app", "--health"]
ENTRYPOINT ["/usr/local/bin/hello-app"]

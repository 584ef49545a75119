# hello-app image: a glibc binary on distroless/cc, non-root (uid 65532).
#   docker build -f Dockerfile.app -t hello-app .
#   docker run --rm -p 8080:8080 -e POD_NAME=hello-1 hello-app
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first (see Dockerfile.proxy).
COPY Cargo.toml Cargo.lock ./
COPY app/Cargo.toml app/
COPY proxy/Cargo.toml proxy/
RUN mkdir -p app/src proxy/src \
    && echo 'fn main() {}' > app/src/main.rs \
    && echo 'fn main() {}' > proxy/src/main.rs \
    && cargo build --release --locked -p hello-app \
    && rm -rf app/src proxy/src
COPY . .
RUN touch app/src/main.rs && bash scripts/build-release.sh hello-app

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hello-app /usr/local/bin/hello-app
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hello-app"]

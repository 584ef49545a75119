# hello-app image.
#   docker build -f Dockerfile.app -t hello-app .
#   docker run --rm -p 8080:8080 -e POD_NAME=hello-1 hello-app
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hello-app \
    && cp target/release/hello-app /hello-app

FROM debian:bookworm-slim
COPY --from=build /hello-app /usr/local/bin/hello-app
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hello-app"]

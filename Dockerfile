# The drover image: one static binary on an empty base.
#
#   docker build -t drover .                    build inside a Rust image (needs a registry)
#   docker build --target prebuilt -t drover .  package a static binary built beforehand with
#     RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
#
# Both run `drover controller /manifests`, serving /healthz and /metrics on
# port 9090; mount the manifests at /manifests and the Docker socket.
# `--build-arg BINARY=PATH` packages another static build (the tests use a
# debug one).
#
# `prebuilt` comes first so that the classic builder, which builds every
# stage up to the target, needs no base image for it.

FROM scratch AS prebuilt
ARG BINARY=target/x86_64-unknown-linux-gnu/release/drover
COPY ${BINARY} /drover
EXPOSE 9090
ENTRYPOINT ["/drover"]
CMD ["controller", "/manifests", "--listen", "0.0.0.0:9090"]

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p drover \
 && cp target/x86_64-unknown-linux-gnu/release/drover /drover

FROM scratch AS image
COPY --from=build /drover /drover
# For repositories on HTTPS stores (and the helpers made from this image).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
EXPOSE 9090
ENTRYPOINT ["/drover"]
CMD ["controller", "/manifests", "--listen", "0.0.0.0:9090"]

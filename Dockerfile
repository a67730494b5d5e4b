# The `trellis` image: one binary for every role (control plane, sidecar, gateway, CLI).
#
# NOT BUILT HERE: the machine this was written on has no Docker, so this file has never
# been built or run. It is kept simple so that it can be checked by reading.
#
#   docker build -t trellis:dev .
#   docker run --rm trellis:dev --help
#
# Why distroless/cc (glibc) and not a static musl build FROM scratch: the binary links
# only glibc, libm and libgcc_s (aws-lc is compiled in by aws-lc-sys), which
# distroless/cc-debian12 carries; the control plane returns freed memory with glibc's
# malloc_trim (crates/control/src/trim.rs), a no-op under musl; and the proxy uses the
# system allocator, which under musl is known to be slow with many threads. Building on
# bookworm keeps the glibc the binary needs no newer than the one in the final image.

# The toolchain: the workspace's rust-version (Cargo.toml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# aws-lc-sys builds with the image's C compiler (no cmake, no clang); proto files are
# compiled by protox (no protoc).
RUN cargo build --release --locked -p trellis \
 && install -D -m 0755 target/release/trellis /out/trellis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/trellis /usr/local/bin/trellis
# The install's manifests run every container as 1337 (Istio's proxy user).
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/trellis"]

# The memgate image: `memgate` (serve, worker) and `memgate-operator` (run, crd, render).
#   docker build -t ghcr.io/memgate/memgate:0.1.0 .
# Runs as the distroless non-root user (65532), which the operator's pod specs expect.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p memgate --bin memgate \
      -p memgate-operator --bin memgate-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/memgate /usr/local/bin/memgate
COPY --from=build /src/target/release/memgate-operator /usr/local/bin/memgate-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/memgate"]

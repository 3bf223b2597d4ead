# One image for every Sportello service: `sportello <gateway|identity|claims|notify>` by argument.
# Build: docker build -t sportello:latest .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sportello \
    && cp target/release/sportello /sportello \
    && strip /sportello

# glibc and libgcc are all the binary links (SQLite is built in, TLS is rustls).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /sportello /usr/local/bin/sportello
# Services keep their SQLite files, keys and uploads here unless told otherwise.
WORKDIR /data
ENV SPORTELLO_DATA_DIR=/data
# mimalloc: commit arena memory as it is used and return freed memory within 100 ms (an idle
# service is then a fraction of its size; `sportello up` sets the same for its services).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=100
USER 65532:65532
EXPOSE 50051 50052 50053 50054
ENTRYPOINT ["/usr/local/bin/sportello"]
CMD ["up", "--listen", "0.0.0.0:50051"]

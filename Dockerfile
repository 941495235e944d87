# Multi-stage build of the mtrec binary.
#   docker build -t mtrec .
# The build stage compiles the whole workspace once (15-40 minutes on 2 cores depending on the
# CPU, mostly Polars; README.md); the runtime stage is Debian slim with the binary, the schemas and curl for the
# healthcheck.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --workspace: the same feature set as the tests, so a later `cargo test` reuses the build.
RUN cargo build --release --workspace --bins \
 && cp target/release/mtrec /usr/local/bin/mtrec

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home mtrec \
 && mkdir /data && chown mtrec /data
COPY --from=build /usr/local/bin/mtrec /usr/local/bin/mtrec
COPY schemas /opt/mtrec/schemas
COPY configs /opt/mtrec/configs
USER mtrec
WORKDIR /data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["mtrec"]
CMD ["--help"]

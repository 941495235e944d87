# Multi-stage build of the mtrec binary.
#   docker build -t mtrec .                          # the default image (no MPI)
#   docker build --target mpi -t mtrec-mpi .         # with `mtrec train --distributed` (MPI)
# A build stage compiles the whole workspace once (15-40 minutes on 2 cores depending on the
# CPU, mostly Polars; README.md); the runtime stages are Debian slim with the binary, the
# schemas and curl for the healthcheck. BuildKit builds only the stages the target needs.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --workspace: the same feature set as the tests, so a later `cargo test` reuses the build.
RUN cargo build --release --workspace --bins \
 && cp target/release/mtrec /usr/local/bin/mtrec

# The same with the `mpi` feature: OpenMPI's headers, and libclang for the bindings' bindgen.
FROM rust:1.95-bookworm AS build-mpi
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenmpi-dev libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins --features mtrec/mpi \
 && cp target/release/mtrec /usr/local/bin/mtrec

# The image of an MPIJob's launcher and workers (deploy/kubernetes/train-mpijob.yaml): OpenMPI,
# and an SSH server the launcher's mpirun reaches the workers through, run as the non-root
# user on port 2222, set up as the Kubeflow MPI Operator's own base images do (the operator
# mounts the keys into ~/.ssh from a Secret, so known hosts and strict modes are off).
FROM debian:bookworm-slim AS mpi
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl openmpi-bin openssh-server openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/run/sshd \
 && sed -i 's/[ #]\(.*StrictHostKeyChecking \).*/ \1no/g' /etc/ssh/ssh_config \
 && echo '    UserKnownHostsFile /dev/null' >> /etc/ssh/ssh_config \
 && sed -i 's/[ #]\(.*Port \).*/ \12222/g' /etc/ssh/ssh_config \
 && useradd --uid 10001 --create-home mtrec \
 && mkdir /data && chown mtrec /data \
 && printf 'PidFile /home/mtrec/sshd.pid\nHostKey /home/mtrec/.ssh/id_rsa\nStrictModes no\nPort 2222\n' \
      > /home/mtrec/.sshd_config \
 && chown mtrec /home/mtrec/.sshd_config
COPY --from=build-mpi /usr/local/bin/mtrec /usr/local/bin/mtrec
COPY schemas /opt/mtrec/schemas
COPY configs /opt/mtrec/configs
USER mtrec
WORKDIR /data

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

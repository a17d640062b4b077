# syntax=docker/dockerfile:1
# pg_qbo for the official postgres image. Build stage: the same scripts/setup.sh the README's
# commands use (Debian packages + cargo-pgrx 0.18.1), then `cargo pgrx package`. Final stage: the
# official image plus pg_cron and the packaged extension files. Also builds the QBO emulator binary
# (stage `emulator`) for the optional offline demo service of docker-compose.yml.
ARG PG_MAJOR=15

FROM postgres:${PG_MAJOR}-bookworm AS build
ARG PG_MAJOR
ENV DEBIAN_FRONTEND=noninteractive PATH=/root/.cargo/bin:$PATH PG_MAJOR=${PG_MAJOR}
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl build-essential \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/setup.sh \
 && cargo pgrx package --pg-config /usr/lib/postgresql/${PG_MAJOR}/bin/pg_config --out-dir /pkg \
 && cargo build --release -p qbo-emulator \
 && install -D target/release/qbo-emulator /out/qbo-emulator

FROM debian:bookworm-slim AS emulator
COPY --from=build /out/qbo-emulator /usr/local/bin/qbo-emulator
EXPOSE 8080
ENTRYPOINT ["qbo-emulator", "--listen", "0.0.0.0:8080"]

FROM postgres:${PG_MAJOR}-bookworm
ARG PG_MAJOR
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends postgresql-${PG_MAJOR}-cron ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /pkg/ /
COPY docker/initdb/ /docker-entrypoint-initdb.d/
# pg_cron must be preloaded; its jobs run in POSTGRES_DB (cron.database_name).
CMD ["postgres", "-c", "shared_preload_libraries=pg_cron", "-c", "cron.use_background_workers=on", "-c", "max_worker_processes=32"]

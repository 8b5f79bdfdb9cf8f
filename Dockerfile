# syntax=docker/dockerfile:1
# AgentDB container image: Debian 12, two stages.
#
#   docker build -t agentdb:0.1.0 .
#   docker run --read-only --tmpfs /tmp -p 8080:8080 \
#     -e AGENTDB_STORE=postgresql://... -e AGENTDB_CACHE=redis://... agentdb:0.1.0
#
# The build stage installs what CI installs (scripts/deps.sh) and builds
# with -Werror, as `bash .ci/run` does (set RUN_TESTS=1 to also run `make
# test` in it; that starts its own PostgreSQL and Redis and takes minutes).
# The runtime stage holds the binary and the Debian packages of the shared
# libraries it links (tests/deploy/test_dockerfile.sh checks that list
# against `ldd`), runs as the unprivileged user 10001, writes nothing
# outside its data volume (a read-only root filesystem works; with
# PostgreSQL it writes nothing at all), stops on SIGTERM (drains the write
# queue first) and reports health from /healthz.
#
# No container engine is reachable from the machines this was written on:
# the image has not been built there; see docs/deploy.md.

FROM debian:12-slim AS build
ARG RUN_TESTS=0
ENV DEBIAN_FRONTEND=noninteractive CI=true
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN apt-get update -qq && bash scripts/deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make build BUILD=build \
    && if [ "$RUN_TESTS" = 1 ]; then make test; fi \
    && make install-files BUILD=build PREFIX=/usr/local DESTDIR=/out

FROM debian:12-slim AS runtime
# runtime-packages: the packages of the libraries `agentdb` links (checked)
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends \
       libsqlite3-0 libssl3 libpq5 libhiredis0.14 libevent-2.1-7 \
       libevent-pthreads-2.1-7 libjansson4 \
       ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 agentdb \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/agentdb \
       --shell /usr/sbin/nologin agentdb \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/agentdb
COPY --from=build /out/usr/local/bin/agentdb /usr/local/bin/agentdb
COPY --from=build /out/usr/local/share/man/man1/agentdb.1 /usr/local/share/man/man1/agentdb.1
COPY --from=build /out/usr/local/share/doc/agentdb /usr/local/share/doc/agentdb
LABEL org.opencontainers.image.title="agentdb" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Storage and decision layer for reinforcement-learning recommenders"
ENV AGENTDB_LISTEN=0.0.0.0:8080 \
    AGENTDB_STORE=sqlite:///var/lib/agentdb/agentdb.db
WORKDIR /var/lib/agentdb
VOLUME ["/var/lib/agentdb"]
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# bash's /dev/tcp: no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/agentdb"]
CMD ["serve"]

# pilotfish image: built on Debian 12, run on Debian 12 slim with only the
# shared libraries pilotfish links (tests/e2e/test_deploy.py checks this list
# against ldd of the binary).
#   docker build -t pilotfish:latest .
#   docker run -p 8080:8080 -v $PWD/pilotfish.yaml:/etc/pilotfish/pilotfish.yaml:ro pilotfish:latest

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config git ca-certificates \
      libevent-dev libhttp-parser-dev libyaml-dev zlib1g-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" bin/pilotfish && strip bin/pilotfish && bin/pilotfish -V

FROM debian:12-slim
# runtime libraries: libevent, libevent_pthreads, libyaml, zlib, hiredis, http-parser
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-core-2.1-7 libevent-pthreads-2.1-7 libyaml-0-2 zlib1g \
      libhiredis0.14 libhttp-parser2.9 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/bin/pilotfish /usr/bin/pilotfish
COPY conf/pilotfish.yaml /etc/pilotfish/pilotfish.yaml
# 65532: the same non-root uid pilotfish inject puts in the pod's securityContext
RUN groupadd --gid 65532 pilotfish \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pilotfish
USER 65532:65532
ENV PILOTFISH_CONFIG=/etc/pilotfish/pilotfish.yaml
EXPOSE 8080 9902
# /live on the admin port, without curl in the image: bash's /dev/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9901 && printf 'GET /live HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pilotfish"]
CMD ["-c", "/etc/pilotfish/pilotfish.yaml"]

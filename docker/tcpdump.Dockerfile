# The capture sidecar: Debian's tcpdump, started by tcpfile-capture, which
# writes a pcap file and prints each packet as it arrives. It also carries the
# lab's sample-file maker and the pcap reader, which need a shell and coreutils.
#
# On a machine that reaches no registry, ci/debian-base-image.sh makes the
# debian:bookworm-slim image locally first. For another architecture than the
# engine's, docker/build-images.sh builds it FROM the tree that
# ci/tcpdump-base-image.sh unpacks for that platform, tcpdump included, so
# that apt never runs under emulation.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/tcpfile/tcpfile" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.title="tcpfile-tcpdump" \
      org.opencontainers.image.description="tcpdump sidecar for the tcpfile lab"
# Unpinned on purpose: Debian's current tcpdump, security updates included; a
# pinned version leaves the mirror when the next update lands. A base that
# already holds it has no apt to run.
# hadolint ignore=DL3008
RUN command -v tcpdump >/dev/null \
    || { apt-get update \
        && apt-get install -y --no-install-recommends tcpdump \
        && rm -rf /var/lib/apt/lists/*; }
COPY docker/capture.sh /usr/local/bin/tcpfile-capture
COPY docker/make-samples.sh /usr/local/bin/tcpfile-make-samples
COPY docker/tcpfile-flows.sh /usr/local/bin/tcpfile-flows
# tcpdump flushes the file and exits on SIGTERM, also as PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tcpfile-capture"]

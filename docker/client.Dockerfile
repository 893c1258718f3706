# The client image: only the static tcpfile-client from dist/<arch>/. Build
# from the repository's root, after ci/build-static.sh. dist/<arch>/ is named by
# TARGETARCH and TARGETVARIANT (dist/armv7 for linux/arm/v7), which BuildKit
# sets from --platform and the classic builder takes as build arguments.
#
#   docker run --rm -v "$PWD/downloads:/downloads" tcpfile/client \
#       -o /downloads/hello.txt SERVER 7070 hello.txt 1M

# A COPY comes first, for the classic builder's --platform (see server.Dockerfile).
FROM scratch
COPY docker/passwd docker/group /etc/
ARG TARGETARCH
ARG TARGETVARIANT
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/tcpfile/tcpfile" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.title="tcpfile-client" \
      org.opencontainers.image.description="The tcpfile client: fetches one file from a tcpfile server"
COPY dist/${TARGETARCH}${TARGETVARIANT}/tcpfile-client /usr/local/bin/
USER 65532:65532
# The client keeps no state worth a graceful stop; as PID 1 it ignores SIGTERM,
# so containers that may be stopped mid-transfer run with an init (compose's
# init: true) that delivers it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tcpfile-client"]
CMD ["--help"]

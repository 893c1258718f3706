# The server images, one per server model: build with --target iterative,
# parallel, preforked or evented, from the repository's root, after ci/build-static.sh.
# Each holds that model's static binary and tcpfile-client for the health check,
# from dist/<arch>/ for the platform being built: dist/amd64, dist/arm64 or
# dist/armv7 (linux/arm/v7), named by TARGETARCH and TARGETVARIANT. BuildKit
# sets both from --platform; the classic builder needs them as build arguments
# (TARGETARCH=arm and TARGETVARIANT=v7 for linux/arm/v7).
#
# All the models together would not fit in the 3 MiB each image is allowed,
# hence one image per model.

FROM scratch AS base
# A COPY comes first: the classic builder gives a scratch stage's first layer
# the platform asked for with --platform, but an ARG or LABEL step before it
# would be committed as the engine's own platform and break an arm64 build.
COPY docker/passwd docker/group /etc/
ARG TARGETARCH
ARG TARGETVARIANT
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/tcpfile/tcpfile" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.description="A tcpfile server on port 7070, serving /srv/files"
COPY dist/${TARGETARCH}${TARGETVARIANT}/tcpfile-client /usr/local/bin/
# Mount the files to serve here; without a mount the server serves nothing.
WORKDIR /srv/files
USER 65532:65532
EXPOSE 7070
# The servers stop gracefully on SIGTERM, also as PID 1.
STOPSIGNAL SIGTERM
# One request over loopback: any well-formed response, even "file not found"
# for this name, shows that the server accepts and answers the protocol.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["/usr/local/bin/tcpfile-client", "--probe", "-q", "--timeout", "3", "127.0.0.1", "7070", "healthcheck", "0"]

FROM base AS iterative
ARG TARGETARCH
ARG TARGETVARIANT
LABEL org.opencontainers.image.title="tcpfile-server-iterative"
COPY dist/${TARGETARCH}${TARGETVARIANT}/tcpfile-server-iterative /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/tcpfile-server-iterative"]
CMD ["0.0.0.0", "7070", "/srv/files"]

FROM base AS parallel
ARG TARGETARCH
ARG TARGETVARIANT
LABEL org.opencontainers.image.title="tcpfile-server-parallel"
COPY dist/${TARGETARCH}${TARGETVARIANT}/tcpfile-server-parallel /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/tcpfile-server-parallel"]
CMD ["0.0.0.0", "7070", "/srv/files", "4"]

FROM base AS preforked
ARG TARGETARCH
ARG TARGETVARIANT
LABEL org.opencontainers.image.title="tcpfile-server-preforked"
COPY dist/${TARGETARCH}${TARGETVARIANT}/tcpfile-server-preforked /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/tcpfile-server-preforked"]
CMD ["0.0.0.0", "7070", "/srv/files", "4"]

FROM base AS evented
ARG TARGETARCH
ARG TARGETVARIANT
LABEL org.opencontainers.image.title="tcpfile-server-evented"
COPY dist/${TARGETARCH}${TARGETVARIANT}/tcpfile-server-evented /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/tcpfile-server-evented"]
CMD ["0.0.0.0", "7070", "/srv/files", "2"]

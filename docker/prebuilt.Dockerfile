# Reinado's images from binaries built on the host (`make images`): for machines that cannot pull a base image.
# The build context is a staging directory the Makefile fills with the static binaries and an empty `data/`:
#   docker build -f docker/prebuilt.Dockerfile --target node -t reinado/node:dev target/images
# Same targets and the same layout as docker/Dockerfile; the legacy builder handles it.

FROM scratch AS node
COPY --chown=65532:65532 data /data
COPY reinado-node /reinado-node
ENV REINADO_DATA_DIR=/data
USER 65532:65532
EXPOSE 7070 7071
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["/reinado-node", "health"]
ENTRYPOINT ["/reinado-node"]

FROM scratch AS proxy
COPY reinado-proxy /reinado-proxy
USER 65532:65532
EXPOSE 7000
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["/reinado-proxy", "health"]
ENTRYPOINT ["/reinado-proxy"]

FROM scratch AS client
COPY reinado /reinado
USER 65532:65532
ENTRYPOINT ["/reinado"]

# The end-to-end tests' stand-in for Jaeger: an OTLP/gRPC receiver printing each span as a JSON line.
FROM scratch AS otlp-sink
COPY reinado-otlp-sink /reinado-otlp-sink
USER 65532:65532
EXPOSE 4317
ENTRYPOINT ["/reinado-otlp-sink"]

# One image for every govledger service; the command picks the role
# (`gateway`, `worker`, `sink`, ...). See compose/README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GOVLEDGER_DATA_DIR=/data

# Non-root runtime user with a writable data directory (spool, runtime files).
RUN groupadd --system --gid 10001 govledger \
    && useradd --system --uid 10001 --gid govledger \
        --create-home --home-dir /home/govledger --shell /usr/sbin/nologin govledger \
    && install -d -o govledger -g govledger -m 0750 /data

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .

USER 10001:10001
WORKDIR /data

# gateway, query API (sink), Faust worker web endpoint, web console
EXPOSE 8080 8124 6066 8125

ENTRYPOINT ["govledger"]
CMD ["--help"]

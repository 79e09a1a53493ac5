#!/bin/sh
# The org root keyring every service signs and verifies records with, and one random
# broker password per service role, for compose/docker-compose.yml's secrets.
# Run once before the first `up`; existing files are kept. To rotate a password, delete its
# file, run this again and `up` again: kafka-init sets the new SCRAM password and the
# service, restarted, reads the new file.
#
# The folder is 0700, so no other host user reaches the files; the files are 0644 because
# Compose bind-mounts them unchanged into containers that run as other uids.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 700 secrets
for role in gateway admin-api worker sink auditor; do
    file="secrets/kafka-$role.password"
    if [ ! -s "$file" ]; then
        openssl rand -hex 32 > "$file"
        echo "made $file"
    fi
    chmod 644 "$file"
done
# The org root keyring: one 32-byte root as a hex line (schemas/authn.py's format).
if [ ! -s secrets/govledger-root.keys ]; then
    openssl rand -hex 32 > secrets/govledger-root.keys
    echo "made secrets/govledger-root.keys"
fi
chmod 644 secrets/govledger-root.keys

#!/usr/bin/env bash
# First start of the container: pg_cron lives in POSTGRES_DB (cron.database_name, set on the
# server's command line by docker-compose.yml), pg_qbo is created there, and the
# emulator (optional compose service) is used when QBO_API_BASE_URL is set.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS pg_qbo;
SQL
if [ -n "${QBO_API_BASE_URL:-}" ]; then
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
ALTER DATABASE "${POSTGRES_DB}" SET qbo.api_base_url = '${QBO_API_BASE_URL}';
ALTER DATABASE "${POSTGRES_DB}" SET qbo.token_url = '${QBO_TOKEN_URL}';
SQL
fi
# Credentials, when mounted as a file, are registered without ever appearing in SQL text.
if [ -f /run/secrets/qbo_credentials ]; then
  install -m 600 -o postgres /run/secrets/qbo_credentials /var/lib/postgresql/qbo-credentials.json
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "SELECT qbo.connect_from_file('/var/lib/postgresql/qbo-credentials.json')"
fi

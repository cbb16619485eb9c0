#!/bin/sh
# Creates the secrets compose.yaml mounts, as files in DIR (default ./secrets, git-ignored): random
# passwords, the URLs that carry them, and a token signing key (JWKS). Refuses to overwrite a folder
# that has them. Usage: sh deploy/compose/make-secrets.sh [DIR]
#
# The folder is private to you (0700); the files in it are readable (0644) because compose mounts them
# as they are, and the services read them as their own users (svc as uid 1000, PostgreSQL as 999 ...).
set -eu
dir=${1:-secrets}
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -e "$dir/database_url" ]; then
  echo "make-secrets: $dir already has secrets; remove them first to make new ones" >&2
  exit 4
fi
mkdir -p "$dir"
chmod 700 "$dir"
# 24 random bytes as hex: safe in URLs and configuration files without quoting.
random() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
umask 022
pg=$(random)
mq=$(random)
printf '%s' "$pg" > "$dir/postgres_password"
printf 'postgres://svc:%s@postgres:5432/svc\n' "$pg" > "$dir/database_url"
printf 'default_user = svc\ndefault_pass = %s\n' "$mq" > "$dir/rabbitmq.conf"
printf 'amqp://svc:%s@rabbitmq:5672\n' "$mq" > "$dir/amqp_url"
rd=$(random)
printf '%s' "$rd" > "$dir/redis_password"
printf 'redis://:%s@redis:6379\n' "$rd" > "$dir/redis_url"
printf 'svc-admin' > "$dir/minio_root_user"
random > "$dir/minio_root_password"
printf '[default]\naws_access_key_id = svc-app\naws_secret_access_key = %s\n' "$(random)" > "$dir/s3_credentials"
# The signing key: with this checkout's svc when it is installed (npm ci), else with the image.
if [ -e "$root/node_modules/@oclif/core" ] && [ -e "$root/dist" ]; then
  node "$root/bin/run.js" keys generate --out "$dir/jwks.json" >/dev/null
else
  abs=$(cd "$dir" && pwd)
  docker run --rm --user "$(id -u):$(id -g)" -v "$abs:/out" svc:local keys generate --out /out/jwks.json >/dev/null
fi
chmod 644 "$dir/jwks.json"
echo "make-secrets: wrote $(ls "$dir" | wc -l) secrets to $dir"

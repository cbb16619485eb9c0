#!/bin/sh
# compose.yaml's minio-init: the bucket svc stores files in, and a MinIO user of svc's own (the keys of
# the s3_credentials secret, which the AWS SDK in svc reads) allowed to read and write it. Safe to rerun.
set -eu
# The keys from the credentials file (INI), with the shell alone: the MinIO image is minimal.
key='' secret=''
while IFS=' =' read -r name value; do
  case $name in
    aws_access_key_id) key=$value ;;
    aws_secret_access_key) secret=$value ;;
  esac
done < /run/secrets/s3_credentials
[ -n "$key" ] && [ -n "$secret" ] || { echo "minio-init: s3_credentials needs aws_access_key_id and aws_secret_access_key" >&2; exit 1; }
mc alias set local http://minio:9000 "$(cat /run/secrets/minio_root_user)" "$(cat /run/secrets/minio_root_password)" >/dev/null
mc mb --ignore-existing local/svc-files
mc admin user add local "$key" "$secret" >/dev/null
mc admin policy attach local readwrite --user "$key" >/dev/null 2>&1 || true # already attached on a rerun
echo "minio-init: bucket svc-files ready for $key"

#!/bin/sh
# One-off set-up of the compose file's S3 server placeholder (MinIO client `mc`): the two buckets,
# and one account per zone, each allowed only its own bucket. With AWS S3 or another store, make
# the same with its own tools: two buckets, two principals, no cross access.
set -eu
bucket_of() { echo "$1" | sed -e 's#^s3://##' -e 's#/.*##'; }
main=$(bucket_of "$EVAL_PIPELINE_STORAGE")
raw=$(bucket_of "$EVAL_PIPELINE_RAW_STORAGE")

until mc alias set store "$AWS_ENDPOINT_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do sleep 2; done
mc mb --ignore-existing "store/$main" "store/$raw"

policy() {  # name, bucket
  cat > "/tmp/$1.json" <<JSON
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"],
  "Resource": ["arn:aws:s3:::$2", "arn:aws:s3:::$2/*"]}]}
JSON
  mc admin policy create store "$1" "/tmp/$1.json"
}
policy eval-pipeline-main "$main"
policy eval-pipeline-raw "$raw"
mc admin user add store "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
mc admin user add store "$EVAL_PIPELINE_RAW_AWS_ACCESS_KEY_ID" "$EVAL_PIPELINE_RAW_AWS_SECRET_ACCESS_KEY"
mc admin policy attach store eval-pipeline-main --user "$AWS_ACCESS_KEY_ID" || true  # already attached on a re-run
mc admin policy attach store eval-pipeline-raw --user "$EVAL_PIPELINE_RAW_AWS_ACCESS_KEY_ID" || true
echo "buckets $main and $raw ready"

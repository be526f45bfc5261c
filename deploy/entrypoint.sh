#!/bin/sh
# Every container of the image starts here: the data home and its Dagster instance, then the command.
#
# DAGSTER_HOME is <data home>/dagster, as the command line sets it (eval_pipeline/runs.py,
# instance_for), so the servers, the run processes, the Dask workers and `eval-pipeline refresh`
# all read one dagster.yaml. The image's deploy/dagster.yaml is the source of truth: it replaces
# the one on the volume at every start (written beside it and renamed, so a container starting
# at the same moment never reads half a file).
set -eu
: "${EVAL_PIPELINE_HOME:=/data}"
export EVAL_PIPELINE_HOME
DAGSTER_HOME="$EVAL_PIPELINE_HOME/dagster"
export DAGSTER_HOME
mkdir -p "$DAGSTER_HOME"
tmp="$DAGSTER_HOME/.dagster.yaml.$$"
cp /opt/eval-pipeline/deploy/dagster.yaml "$tmp"
mv -f "$tmp" "$DAGSTER_HOME/dagster.yaml"
exec "$@"

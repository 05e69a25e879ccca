#!/usr/bin/env bash
# Run a mutransfer sweep on the RayCluster of raycluster.yaml: copy the recipe (and this checkout's mutransfer,
# for the driver) into the head pod, then run `mutransfer sweep` there against the local Ray head.
#   ./run-sweep.sh recipes/gpt_chars_width.yaml [NAMESPACE]
set -euo pipefail

RECIPE=${1:?usage: run-sweep.sh RECIPE [NAMESPACE]}
NS=${2:-default}
CLUSTER=${MUTRANSFER_RAYCLUSTER:-mutransfer}
REPO=$(cd "$(dirname "$0")/../../.." && pwd)

kubectl -n "$NS" wait --for=condition=Ready pod -l "ray.io/cluster=$CLUSTER,ray.io/node-type=head" --timeout=300s
HEAD=$(kubectl -n "$NS" get pods -l "ray.io/cluster=$CLUSTER,ray.io/node-type=head" \
    -o jsonpath='{.items[0].metadata.name}')
echo "head pod: $HEAD"

# The driver needs mutransfer (the workers get it from the driver through Ray's runtime_env).
kubectl -n "$NS" exec "$HEAD" -- mkdir -p /tmp/mutransfer
tar -C "$REPO" -cf - pyproject.toml README.md mutransfer dashboard \
    | kubectl -n "$NS" exec -i "$HEAD" -- tar -C /tmp/mutransfer -xf -
kubectl -n "$NS" exec "$HEAD" -- pip install -q -e /tmp/mutransfer
kubectl -n "$NS" cp "$RECIPE" "$HEAD:/tmp/mutransfer/recipe.yaml"

NAME=$(basename "$RECIPE" .yaml)
# auto: the Ray head running in this pod. The sweep resumes if run again (e.g. after a lost worker pod).
kubectl -n "$NS" exec "$HEAD" -- bash -c \
    "cd /tmp/mutransfer && mutransfer sweep recipe.yaml --name '$NAME' --address auto --quiet && mutransfer fit '$NAME'"

#!/usr/bin/env bash
# Build, push and launch the news pipeline on Google Cloud Dataflow. See deploy/README.md for every
# option. Usage, from anywhere:
#
#   PROJECT=my-project BUCKET=my-bucket deploy/launch.sh build            # docker build the worker image
#   PROJECT=my-project BUCKET=my-bucket deploy/launch.sh push             # push it to Artifact Registry
#   PROJECT=... BUCKET=... INPUT=gs://.../in/ OUTPUT=gs://.../out/ deploy/launch.sh batch
#                                                # direct launch from this machine; waits, prints the summary
#   PROJECT=... BUCKET=... deploy/launch.sh template-build                # Flex Template spec -> gs://
#   PROJECT=... BUCKET=... INPUT=... OUTPUT=... deploy/launch.sh template-run   # launch from the template
#   deploy/launch.sh streaming                   # streaming job: INPUT=pubsub://projects/P/subscriptions/S or gs://b/inbox/
#
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail

cmd="${1:-help}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PROJECT="${PROJECT:-}"                              # Google Cloud project id
REGION="${REGION:-us-central1}"                     # Dataflow region (and Artifact Registry location)
BUCKET="${BUCKET:-}"                                # bucket for temp, staging and the template spec
REPOSITORY="${REPOSITORY:-news-pipeline}"           # Artifact Registry Docker repository
TAG="${TAG:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo latest)}"
IMAGE="${IMAGE:-${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/news-pipeline:${TAG}}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"   # CUDA: .../whl/cu128
HUB_MODELS="${HUB_MODELS:-}"                        # Hugging Face ids to bake into the image
TEMPLATE="${TEMPLATE:-gs://${BUCKET}/templates/news-pipeline-${TAG}.json}"
JOB_NAME="${JOB_NAME:-news-pipeline-$(date -u +%Y%m%d-%H%M%S)}"
INPUT="${INPUT:-}"                                  # gs://bucket/news/ (folder), a file or a glob
OUTPUT="${OUTPUT:-}"                                # gs://bucket/news-out/
NER_MODEL="${NER_MODEL:-}"                          # empty: the default baked into the image
STANCE_MODEL="${STANCE_MODEL:-}"
MAX_NUM_WORKERS="${MAX_NUM_WORKERS:-10}"
MACHINE_TYPE="${MACHINE_TYPE:-n1-standard-4}"
PYTHON="${PYTHON:-${ROOT}/.venv/bin/python}"        # needs `pip install -e '.[gcp]'` (make install does it)
EXTRA_ARGS="${EXTRA_ARGS:-}"                        # more Beam options, space-separated

run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

need() {
  local name
  for name in "$@"; do
    if [[ -z "${!name}" ]]; then
      echo "launch.sh ${cmd}: set ${name} (see deploy/README.md)" >&2
      exit 2
    fi
  done
}

model_args=()
[[ -n "$NER_MODEL" ]] && model_args+=("--ner_model=${NER_MODEL}")
[[ -n "$STANCE_MODEL" ]] && model_args+=("--stance_model=${STANCE_MODEL}")
read -r -a extra <<< "$EXTRA_ARGS"

# what every Dataflow job of this project gets (see deploy/README.md for each option)
dataflow_args=(
  --runner=DataflowRunner
  --project="$PROJECT" --region="$REGION" --job_name="$JOB_NAME"
  --temp_location="gs://${BUCKET}/dataflow/temp"
  --staging_location="gs://${BUCKET}/dataflow/staging"
  --sdk_container_image="$IMAGE" --sdk_location=container
  --max_num_workers="$MAX_NUM_WORKERS" --machine_type="$MACHINE_TYPE"
)

case "$cmd" in
  build)
    need PROJECT
    run docker build -f "$ROOT/deploy/Dockerfile" \
      --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL}" \
      --build-arg "HUB_MODELS=${HUB_MODELS}" \
      --build-arg "IMAGE_URI=${IMAGE}" \
      -t "$IMAGE" "$ROOT"
    ;;
  push)
    need PROJECT
    # once per project: gcloud artifacts repositories create "$REPOSITORY" --repository-format=docker --location="$REGION"
    run gcloud auth configure-docker "${REGION}-docker.pkg.dev" --quiet
    run docker push "$IMAGE"
    ;;
  batch)
    need PROJECT BUCKET INPUT OUTPUT
    run "$PYTHON" -m pipeline run \
      --input="$INPUT" --output="$OUTPUT" "${model_args[@]}" "${dataflow_args[@]}" "${extra[@]}"
    ;;
  template-build)
    need PROJECT BUCKET
    run gcloud dataflow flex-template build "$TEMPLATE" \
      --project="$PROJECT" \
      --image="$IMAGE" --sdk-language=PYTHON \
      --metadata-file="$ROOT/deploy/flex-template-metadata.json"
    ;;
  template-run)
    need PROJECT BUCKET INPUT OUTPUT
    params="input=${INPUT},output=${OUTPUT},sdk_container_image=${IMAGE},sdk_location=container"
    [[ -n "$NER_MODEL" ]] && params+=",ner_model=${NER_MODEL}"
    [[ -n "$STANCE_MODEL" ]] && params+=",stance_model=${STANCE_MODEL}"
    run gcloud dataflow flex-template run "$JOB_NAME" \
      --project="$PROJECT" --region="$REGION" \
      --template-file-gcs-location="$TEMPLATE" \
      --temp-location="gs://${BUCKET}/dataflow/temp" \
      --staging-location="gs://${BUCKET}/dataflow/staging" \
      --max-workers="$MAX_NUM_WORKERS" --worker-machine-type="$MACHINE_TYPE" \
      --parameters="$params"
    ;;
  streaming)
    # INPUT is pubsub://projects/P/subscriptions/S (one article per message) or gs://bucket/inbox/ (polled)
    need PROJECT BUCKET INPUT OUTPUT
    run "$PYTHON" -m pipeline watch \
      --input="$INPUT" --output="$OUTPUT" "${model_args[@]}" "${dataflow_args[@]}" \
      --streaming --enable_streaming_engine "${extra[@]}"
    ;;
  *)
    sed -n '2,13p' "${BASH_SOURCE[0]}"
    ;;
esac

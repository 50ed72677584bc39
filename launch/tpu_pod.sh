#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod: creates it through queued resources, installs this checkout on every
# worker, runs the trainer with the same arguments on all workers (--worker=all) while streaming
# their logs and serving TensorBoard here, then deletes the pod (also on failure or Ctrl-C).
#
#   launch/tpu_pod.sh --name=NAME --zone=ZONE --accelerator=v5p-64 \
#     --config=configs/ava_kinetics_cofinetune.py --workdir=gs://BUCKET/DIR [--config.key=value ...]
#
# Options: --project=PROJECT, --runtime_version=VERSION (default v2-alpha-tpuv5, the v5p image;
# v5e: v2-alpha-tpuv5-lite, v4: tpu-ubuntu2204-base), --spot (preemptible capacity), --keep (leave
# the pod up), --tensorboard_port=PORT (0: none), --dry-run (print every command, run nothing).
# Any other argument goes to the trainer unchanged.
# The workdir must be a gs:// path every worker can write. A preempted run is resumed by running the
# same command again: the trainer saves on SIGTERM and resumes from the workdir's checkpoint.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name='' zone='' accelerator='' config='' workdir='' project=''
runtime_version='v2-alpha-tpuv5'
spot=false keep=false dry_run=false tensorboard_port=6006
trainer_args=()
for arg in "$@"; do
  case "$arg" in
    --name=*) name=${arg#*=} ;;
    --zone=*) zone=${arg#*=} ;;
    --accelerator=*) accelerator=${arg#*=} ;;
    --config=*) config=${arg#*=} ;;
    --workdir=*) workdir=${arg#*=} ;;
    --project=*) project=${arg#*=} ;;
    --runtime_version=*) runtime_version=${arg#*=} ;;
    --tensorboard_port=*) tensorboard_port=${arg#*=} ;;
    --spot) spot=true ;;
    --keep) keep=true ;;
    --dry-run|--dry_run) dry_run=true ;;
    *) trainer_args+=("$arg") ;;
  esac
done
for required in name zone accelerator config workdir; do
  if [[ -z ${!required} ]]; then
    echo "tpu_pod.sh: --$required is required (see the top of $0)" >&2
    exit 2
  fi
done

# Every value reaches gcloud as one argument, and the trainer's arguments reach the workers' shell
# quoted; the names are also checked here, so that a mistake stops before a pod is created.
check() {  # check FLAG VALUE REGEX EXPECTED
  if [[ ! $2 =~ $3 ]]; then
    printf 'tpu_pod.sh: --%s=%q: expected %s\n' "$1" "$2" "$4" >&2
    exit 2
  fi
}
check name "$name" '^[A-Za-z0-9-]+$' 'a TPU name (letters, digits and -)'
check zone "$zone" '^[A-Za-z0-9-]+$' 'a zone such as us-east5-a'
check accelerator "$accelerator" '^[a-z0-9-]+$' 'an accelerator type such as v5p-64'
check runtime_version "$runtime_version" '^[A-Za-z0-9._-]+$' 'a TPU runtime version such as v2-alpha-tpuv5'
check tensorboard_port "$tensorboard_port" '^[0-9]+$' 'a port number (0: no TensorBoard)'
if [[ -n $project ]]; then
  check project "$project" '^[a-z0-9.:-]+$' 'a project id'
fi

# Prints a command shell-quoted, so that it can be pasted.
show() {
  local line
  printf -v line '%q ' "$@"
  echo "${line% }"
}

# Prints a command and runs it, unless this is a dry run.
run() {
  show "$@"
  if [[ $dry_run == false ]]; then
    "$@"
  fi
}

gcloud_flags=(--zone="$zone")
if [[ -n $project ]]; then
  gcloud_flags+=(--project="$project")
fi
create_flags=(--node-id="$name" --accelerator-type="$accelerator" --runtime-version="$runtime_version")
if [[ $spot == true ]]; then
  create_flags+=(--spot)
fi

cleanup() {
  if [[ -n ${tensorboard_pid:-} ]]; then
    kill "$tensorboard_pid" 2>/dev/null || true
  fi
  if [[ $keep == false ]]; then
    run gcloud compute tpus queued-resources delete "$name" "${gcloud_flags[@]}" --force --quiet
  fi
}

# Create the pod and wait until its queued resource is granted.
run gcloud compute tpus queued-resources create "$name" "${create_flags[@]}" "${gcloud_flags[@]}"
trap cleanup EXIT
state_command=(gcloud compute tpus queued-resources describe "$name" "${gcloud_flags[@]}"
               --format='value(state.state)')
run "${state_command[@]}"
if [[ $dry_run == false ]]; then
  until [[ $("${state_command[@]}") == ACTIVE ]]; do
    sleep 30
  done
fi

# Install this checkout, as it is (uncommitted changes included), on every worker.
tarball="/tmp/vivit_cofinetune_$name.tar.gz"
jax_version=$(sed -n 's/^jax==//p' "$REPO/requirements.txt")
run tar -C "$REPO" --exclude=.git -czf "$tarball" .
run gcloud compute tpus tpu-vm scp "$tarball" "$name:vivit_cofinetune.tar.gz" --worker=all \
  "${gcloud_flags[@]}"
run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${gcloud_flags[@]}" --command="\
rm -rf ~/vivit_cofinetune && mkdir ~/vivit_cofinetune && tar -C ~/vivit_cofinetune -xzf ~/vivit_cofinetune.tar.gz && \
pip install -q -e ~/vivit_cofinetune 'jax[tpu]==$jax_version' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"

# TensorBoard here, reading the workdir the workers write.
if [[ $tensorboard_port != 0 ]]; then
  tensorboard_command=(tensorboard --logdir="$workdir" --port="$tensorboard_port")
  show "${tensorboard_command[@]}"
  if [[ $dry_run == false ]]; then
    "${tensorboard_command[@]}" >/dev/null 2>&1 &
    tensorboard_pid=$!
    echo "TensorBoard: http://localhost:$tensorboard_port"
  fi
fi

# The same trainer command on every worker; jax.distributed finds the others by itself. The ssh
# streams every worker's log here; stopping it (Ctrl-C) stops the run.
printf -v trainer '%q ' python3 -m vivit_cofinetune.main --config="$config" --workdir="$workdir" \
  "${trainer_args[@]}"
run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${gcloud_flags[@]}" \
  --command="cd ~/vivit_cofinetune && ${trainer% }"

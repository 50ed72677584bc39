#!/usr/bin/env bash
# Trains on a SLURM GPU cluster: submits an sbatch job of NODES x GPUS processes (one per GPU), each
# running the trainer with the same arguments through srun. SLURM sends the trainer SIGTERM a while
# before the time limit, so it saves a checkpoint and exits 0; submitting again resumes.
#
#   launch/slurm.sh --nodes=2 --gpus_per_node=8 --config=configs/ava_kinetics_cofinetune.py \
#     --workdir=/shared/DIR [--config.key=value ...]
#
# Options: --time=HH:MM:SS (default 24:00:00), --partition=P, --account=A, --job_name=N,
# --term_before_end_s=S (when SIGTERM comes before the time limit; default 300: enough to write a
# ViViT-L checkpoint), --setup='CMD' (run before srun, e.g. 'source ~/venv/bin/activate'),
# --dry-run (print the sbatch script, submit nothing). Any other argument goes to the trainer.
# The checkout and the workdir must be on a file system every node sees.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nodes='' gpus_per_node='' config='' workdir=''
time_limit='24:00:00' partition='' account='' job_name='vivit_cofinetune' term_before_end_s=300
setup='' dry_run=false
trainer_args=()
for arg in "$@"; do
  case "$arg" in
    --nodes=*) nodes=${arg#*=} ;;
    --gpus_per_node=*) gpus_per_node=${arg#*=} ;;
    --config=*) config=${arg#*=} ;;
    --workdir=*) workdir=${arg#*=} ;;
    --time=*) time_limit=${arg#*=} ;;
    --partition=*) partition=${arg#*=} ;;
    --account=*) account=${arg#*=} ;;
    --job_name=*) job_name=${arg#*=} ;;
    --term_before_end_s=*) term_before_end_s=${arg#*=} ;;
    --setup=*) setup=${arg#*=} ;;
    --dry-run|--dry_run) dry_run=true ;;
    *) trainer_args+=("$arg") ;;
  esac
done
for required in nodes gpus_per_node config workdir; do
  if [[ -z ${!required} ]]; then
    echo "slurm.sh: --$required is required (see the top of $0)" >&2
    exit 2
  fi
done

# The #SBATCH lines are read by sbatch itself, which does not unquote them: their values are
# checked instead, so that no value can end a line and start a command. Everything on the srun line
# is shell-quoted; --setup is a command by design and runs as given.
check() {  # check FLAG VALUE REGEX EXPECTED
  if [[ ! $2 =~ $3 ]]; then
    printf 'slurm.sh: --%s=%q: expected %s\n' "$1" "$2" "$4" >&2
    exit 2
  fi
}
check nodes "$nodes" '^[1-9][0-9]*$' 'a positive integer'
check gpus_per_node "$gpus_per_node" '^[1-9][0-9]*$' 'a positive integer'
check term_before_end_s "$term_before_end_s" '^[0-9]+$' 'a number of seconds'
check time "$time_limit" '^([0-9]+-)?[0-9]+(:[0-9][0-9]){0,2}$' \
  'a SLURM time limit such as 24:00:00 or 2-00:00:00'
check job_name "$job_name" '^[A-Za-z0-9._+-]+$' 'letters, digits and . _ + -'
if [[ -n $partition ]]; then
  check partition "$partition" '^[A-Za-z0-9._,-]+$' 'partition names (letters, digits, . _ -, comma-separated)'
fi
if [[ -n $account ]]; then
  check account "$account" '^[A-Za-z0-9._-]+$' 'letters, digits and . _ -'
fi
if [[ $REPO =~ [[:space:]] ]]; then
  printf 'slurm.sh: the checkout path %q holds whitespace, which #SBATCH --chdir cannot take; move the checkout\n' "$REPO" >&2
  exit 2
fi

optional_directives=''
if [[ -n $partition ]]; then
  optional_directives+="#SBATCH --partition=$partition"$'\n'
fi
if [[ -n $account ]]; then
  optional_directives+="#SBATCH --account=$account"$'\n'
fi
printf -v trainer '%q ' python -m vivit_cofinetune.main --config="$config" --workdir="$workdir" \
  "${trainer_args[@]}"

# One process per GPU: jax.distributed.initialize() reads SLURM's variables, and gives each process
# the GPU of its SLURM_LOCALID. --signal without B: signals the job step's processes themselves.
script="#!/usr/bin/env bash
#SBATCH --job-name=$job_name
#SBATCH --nodes=$nodes
#SBATCH --gpus-per-node=$gpus_per_node
#SBATCH --ntasks-per-node=$gpus_per_node
#SBATCH --time=$time_limit
#SBATCH --signal=TERM@$term_before_end_s
#SBATCH --chdir=$REPO
#SBATCH --output=$REPO/slurm-%j.out
${optional_directives}set -euo pipefail
${setup}
srun --kill-on-bad-exit=1 ${trainer% }
"

if [[ $dry_run == true ]]; then
  printf '%s' "$script"
else
  sbatch <<<"$script"
fi

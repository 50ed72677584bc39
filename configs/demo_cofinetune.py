"""Co-finetunes a tiny ViViT on the two synthetic tasks (localisation + classification) on a CPU.

  python -m vivit_cofinetune.main --config=configs/demo_cofinetune.py --workdir=/tmp/vivit_demo

Sized for a 2-core CPU: about 3 minutes on an idle machine, generating the synthetic datasets into
~/tensorflow_datasets (config.data_dir) on first use. Expected (docs/results.md; identical on every
run on one machine, 2-core AMD EPYC with AVX2 here): classification top-1 0.635 (chance 0.12) and
localisation mAP 0.337 (chance 0.114), with head / mid / tail AP 0.608 / 0.294 / 0.109. Other CPUs
round differently (their XLA kernels): expect mAP within about 0.03 of that (SSE4.2-only kernels
give 0.329, another EPYC machine gave 0.312).
Variants: `:variant=factorised_encoder` (or factorised_self_attention, factorised_dot_product) swaps
the backbone; `:transfer=True` trains the transfer-learning baseline (classification, then
localisation) on the same total steps.
"""
import os

import ml_collections

from vivit_cofinetune.config_lib import config_args
from vivit_cofinetune.config_lib import input_config
from vivit_cofinetune.config_lib import task_config
from vivit_cofinetune.data.builders import synthetic
from vivit_cofinetune.models.vivit import vivit_config


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  arg = config_args(arg, variant='spatio_temporal', transfer=False, steps=2400)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')

  # No CLS token: from scratch on little data, mean pooling learns several times faster (measured
  # on the synthetic classes: 0.43 vs 0.13 top-1 after 600 steps).
  config.model = vivit_config('Ti/8x2', variant=arg.variant, hidden_size=64, num_layers=4,
                              mlp_dim=128, num_heads=4, num_temporal_layers=2, classifier='mean')
  # The factorised encoder's pooled output is its temporal encoder's; the others pool the token grid.
  pooling = 'token' if arg.variant == 'factorised_encoder' else 'mean'
  clips = input_config(num_frames=8, crop_size=32, frame_stride=2, min_crop_area=0.5)
  # Equal steps for both tasks in the transfer baseline, so co-finetuning sees the same data.
  steps_per_task = arg.steps // 2
  config.tasks = dict(
      synthetic_loc=task_config(
          'localisation', 'synthetic_actions_loc', num_classes=len(synthetic.LOC_CLASS_NAMES),
          batch_size=16, eval_batch_size=32, input=clips, transfer_steps=steps_per_task,
          max_boxes=4, head=dict(roi_size=4, sampling_ratio=2, dropout_rate=0.0)),
      synthetic_cls=task_config(
          'classification', 'synthetic_actions_cls', num_classes=len(synthetic.CLS_CLASS_NAMES),
          batch_size=16, eval_batch_size=32, input=clips, transfer_steps=steps_per_task,
          label_smoothing=0.1, head=dict(pooling=pooling, dropout_rate=0.0)),
  )
  if arg.transfer:
    config.schedule = dict(phases=[
        dict(steps=steps_per_task, mixture=dict(synthetic_cls=1.0)),
        dict(steps=steps_per_task, mixture=dict(synthetic_loc=1.0))])
  else:
    config.schedule = dict(phases=[
        dict(steps=arg.steps, mixture=dict(synthetic_loc='steps', synthetic_cls='steps'))])

  config.optimizer = dict(name='adamw', base_learning_rate=1e-3, warmup_steps=50,
                          weight_decay=1e-4, grad_clip_norm=1.0)
  # Start from a previous workdir or a converted checkpoint (tools.convert_checkpoint): '' = scratch.
  config.init_from = dict(path='', reinit=(), freeze=())
  config.mesh = dict(data=-1, fsdp=1, model=1)
  config.log_every = 200
  config.eval_every = 1200
  config.checkpoint_every = 1200
  # Also save when this many minutes have passed since the last save (0: by steps only).
  config.checkpoint_every_minutes = 0.0
  config.keep_checkpoints = 2
  # Compiled steps kept in WORKDIR/compilation_cache: a rerun or resume skips most compilation.
  config.compilation_cache = True
  # (first step, number of steps) to trace with jax.profiler into WORKDIR/profile; () traces
  # nothing (docs/monitoring.md).
  config.profile_steps = ()
  return config

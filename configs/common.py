"""What the paper's configs (configs/ava*_cofinetune.py) share: its datasets as tasks, its schedules,
its trainer settings, the ImageNet-21k initialisation, and the variants every paper config takes.

A paper config is its docstring and its task set: `get_config(arg)` returns
`paper_config(arg, tasks)`. Values marked "reconstructed" follow the authors' ViViT / PolyViT / Scenic
practice, not a quote of the paper; each is a config field, so a run can change it.
"""
from collections.abc import Mapping
import os

import ml_collections

from vivit_cofinetune.config_lib import ConfigError
from vivit_cofinetune.config_lib import config_args
from vivit_cofinetune.config_lib import input_config
from vivit_cofinetune.config_lib import task_config
from vivit_cofinetune.models import pretrained
from vivit_cofinetune.models.vivit import vivit_config

# Trained on all 80 classes; evaluated on the 60 of the official frame-mAP, which the prepared
# dataset records (ava_action_list_v2.2_for_activitynet_2019.pbtxt, read by the AVA builder).
AVA_NUM_CLASSES = 80
# The upstream classification sets: dataset name -> classes.
NUM_CLASSES = {'kinetics700': 700, 'moments_in_time': 339, 'ssv2': 174}

# Steps each dataset gets in the transfer-learning schedule at batch 64 (reconstructed): ~12 epochs
# of Kinetics-700 (545k clips), ~8 of Moments in Time (802k), ~19 of SSv2 (169k), ~20 epochs of AVA's
# 211k training boxes; the AVA-Kinetics set (AVA + ~140k Kinetics keyframes) gets as many epochs.
TRANSFER_STEPS = {'ava_v2_2': 30_000, 'ava_v2_2+ava_kinetics': 50_000, 'kinetics700': 100_000,
                  'moments_in_time': 100_000, 'ssv2': 50_000}
# Co-finetune-then-finetune (`:then_finetune=True`): steps of the last phase, AVA alone (reconstructed).
FINETUNE_STEPS = 10_000

# Sampling strategies (`:sampling=`): 'steps', 'size' and 'uniform' are mixture weights of
# schedule.py (each step trains one task drawn by them); 'mixed' trains every task at every step
# (mixed batches: each task's batch in every step, losses summed), for as many steps as there are
# steps per task, so that with equal batch sizes it sees the same clips as the other strategies.
SAMPLING = ('steps', 'size', 'uniform', 'mixed')

# Where the public ImageNet-21k ViT-{size}/16 (gs://vit_models/imagenet21k/ViT-{size}_16.npz, the
# ViViT paper's start), converted as the configs' docstrings say, is read from by default
# (`:init=imagenet21k`); its position embeddings are sized for the paper's 32x224x224 clips.
IMAGENET21K_INIT = '~/vivit_checkpoints/vit_i21k_{size}16_to_vivit_32x224'


def model(size: str, init: str = 'imagenet21k') -> ml_collections.ConfigDict:
  """ViViT-{size}/16x2, spatio-temporal attention, as in the paper; with `init` a name of
  models/pretrained.STARTING_POINTS, that checkpoint's sizes and numerics instead of `size`'s."""
  config = vivit_config(f'{size}/16x2', variant='spatio_temporal',
                        stochastic_depth=0.1 if size in ('L', 'H') else 0.0,
                        remat_policy='dots_with_no_batch_dims_saveable', dtype='bfloat16')
  if init in pretrained.STARTING_POINTS:
    config.update(pretrained.STARTING_POINTS[init].model)
  return config


def paper_config(arg: str, tasks: Mapping[str, ml_collections.ConfigDict]
                 ) -> ml_collections.ConfigDict:
  """The paper's experiment on `tasks` (the AVA task named 'ava'), in the variant `arg` names.

  Variants (`:a=1,b=2`):
    size=B|L             the backbone (default L).
    transfer=True        the transfer-learning baseline: the upstream sets (mixed by `sampling`),
                         then AVA, same steps per task.
    then_finetune=True   co-finetunes, then finetunes on AVA alone for finetune_steps (10,000).
    sampling=steps|size|uniform|mixed   which task each step trains (schedule.py): each
                         dataset's steps of the transfer schedule (default, the paper's),
                         proportional to training-set size, or equal steps; 'mixed' trains every
                         task at every step (mixed batches, losses summed) for the steps per task.
    init=imagenet21k|NAME|PATH|none   the backbone's start (see `init_from`; NAME one of
                         models/pretrained.STARTING_POINTS).
    local=True           tiny model, 8x64x64 clips, batch 2, 10 steps per task, no init: a CPU run
                         on the same datasets.
    synthetic=True       like local, on the built-in synthetic datasets: runs with no data at all.
  """
  arg = config_args(arg, size='L', transfer=False, then_finetune=False, sampling='steps',
                    finetune_steps=FINETUNE_STEPS, init='imagenet21k', local=False,
                    synthetic=False)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')
  config.model = model(arg.size, arg.init)
  config.tasks = dict(tasks)
  config.schedule = dict(phases=phases(
      config.tasks, transfer=arg.transfer, then_finetune=arg.then_finetune, sampling=arg.sampling,
      finetune_steps=arg.finetune_steps))
  trainer_settings(config)
  config.init_from = init_from(arg.init, arg.size, local=arg.local or arg.synthetic)
  if arg.local or arg.synthetic:
    shrink_for_local_run(config)
  if arg.synthetic:
    use_synthetic_datasets(config)
  return config


def ava_task(dataset: str = 'ava_v2_2', *, transfer_steps: int | None = None
             ) -> ml_collections.ConfigDict:
  """AVA localisation on `dataset` ('ava_v2_2', or 'ava_v2_2+ava_kinetics': the AVA-Kinetics set),
  trained for `transfer_steps` in the transfer schedule (default: TRANSFER_STEPS[dataset])."""
  return task_config(
      'localisation', dataset, num_classes=AVA_NUM_CLASSES, batch_size=64,
      input=input_config(num_frames=32, crop_size=224, frame_stride=2, min_crop_area=0.3,
                         detector_score_threshold=0.8, eval_resize='letterbox'),
      transfer_steps=TRANSFER_STEPS[dataset] if transfer_steps is None else transfer_steps,
      max_boxes=16,
      # '' = the official exclusions stored with the prepared dataset.
      exclusions='',
      # The official AVA evaluator; 'both' adds PySlowFast's (mAP_slowfast).
      eval_protocol='activitynet',
      # Summed over the 80 classes, then averaged over boxes, as Scenic's
      # weighted_sigmoid_cross_entropy does (reconstructed). With one learning rate for all tasks,
      # this sets AVA's weight against the softmax tasks: 'mean' would scale its gradients by 1/80.
      class_reduction='sum',
      head=dict(roi_size=7, sampling_ratio=2, dropout_rate=0.3))


def classification_task(dataset: str, *, transfer_steps: int | None = None
                        ) -> ml_collections.ConfigDict:
  """Kinetics-700, Moments in Time or SSv2 clip classification, 4 clips x 3 crops in evaluation,
  trained for `transfer_steps` in the transfer schedule (default: TRANSFER_STEPS[dataset])."""
  clips = input_config(num_frames=32, crop_size=224, frame_stride=2, min_crop_area=0.3,
                       num_test_clips=4, num_test_crops=3)
  steps = TRANSFER_STEPS[dataset] if transfer_steps is None else transfer_steps
  return task_config('classification', dataset, num_classes=NUM_CLASSES[dataset], batch_size=64,
                     input=clips, transfer_steps=steps, label_smoothing=0.1,
                     head=dict(pooling='token', dropout_rate=0.0))


def phases(tasks: ml_collections.ConfigDict, *, transfer: bool, then_finetune: bool,
           sampling: str, finetune_steps: int, downstream: str = 'ava') -> list[dict]:
  """`config.schedule.phases`: co-finetuning (one phase with every task, `sampling` weights), the
  transfer baseline (the upstream tasks, then `downstream`, on the same steps per task), or
  co-finetuning then `finetune_steps` on `downstream` alone."""
  if sampling not in SAMPLING:
    raise ConfigError(f'config argument sampling={sampling!r}: expected one of {list(SAMPLING)}')
  if transfer and then_finetune:
    raise ConfigError('config arguments transfer=True and then_finetune=True: choose one')
  upstream = [name for name in tasks if name != downstream]
  if transfer:
    # The upstream phase of the baseline draws one task per step ('mixed' compares co-finetuning's
    # batches, not the baseline's).
    upstream_weight = 'steps' if sampling == 'mixed' else sampling
    return [dict(steps=sum(tasks[name].transfer_steps for name in upstream),
                 mixture={name: upstream_weight for name in upstream}),
            dict(steps=tasks[downstream].transfer_steps, mixture={downstream: 1.0})]
  if sampling == 'mixed':
    cofinetune = dict(steps=sum(task.transfer_steps for task in tasks.values()) // len(tasks),
                      mixture={name: 'uniform' for name in tasks}, mixed_batches=True)
  else:
    cofinetune = dict(steps=sum(task.transfer_steps for task in tasks.values()),
                      mixture={name: sampling for name in tasks})
  if then_finetune:
    return [cofinetune, dict(steps=finetune_steps, mixture={downstream: 1.0})]
  return [cofinetune]


def init_from(init: str, size: str, *, local: bool = False) -> ml_collections.ConfigDict:
  """`config.init_from` for `:init=`: 'imagenet21k' (the converted ImageNet-21k ViT-{size}/16 at
  IMAGENET21K_INIT), a video-pretrained checkpoint by name (models/pretrained.STARTING_POINTS,
  converted to pretrained.directory(name)), a converted directory or workdir, or 'none' (from
  scratch).

  A local run starts from scratch unless `init` names a checkpoint: the converted ViT fits neither
  the tiny model nor a CPU.
  """
  if init == 'imagenet21k' and not local:
    path = os.path.expanduser(IMAGENET21K_INIT.format(size=size))
  elif init in pretrained.STARTING_POINTS and not local:
    path = pretrained.directory(init)
  elif init in ('', 'none', 'imagenet21k', *pretrained.STARTING_POINTS):
    path = ''
  else:
    path = os.path.expanduser(init)
  return ml_collections.ConfigDict(dict(path=path, reinit=(), freeze=()))


def trainer_settings(config: ml_collections.ConfigDict) -> None:
  """Optimizer, mesh, logging, evaluation and checkpoint cadence of the paper runs."""
  # Scenic's ViViT recipe (reconstructed): SGD with momentum, cosine with warm-up, clipping at 1.
  config.optimizer = dict(name='sgd', momentum=0.9, base_learning_rate=0.1, warmup_steps=2_500,
                          grad_clip_norm=1.0)
  config.mesh = dict(data=-1, fsdp=1, model=1)
  config.log_every = 100
  config.eval_every = 10_000
  config.checkpoint_every = 2_000
  # Steps of ViViT-L take ~100x the demo's: bound the work a crash loses by time as well.
  config.checkpoint_every_minutes = 30.0
  config.keep_checkpoints = 3
  # Compiled steps kept in WORKDIR/compilation_cache: a resumed run skips most of its compilation.
  config.compilation_cache = True
  # (first step, number of steps) to trace with jax.profiler into WORKDIR/profile; () traces
  # nothing (docs/monitoring.md).
  config.profile_steps = ()


def shrink_for_local_run(config: ml_collections.ConfigDict, *, steps_per_task: int = 10) -> None:
  """A tiny model, 8-frame 64x64 clips, batches of 2 and `steps_per_task` steps per task in every
  phase (so the transfer baseline still sees the co-finetuning run's data), on the same datasets."""
  config.model = vivit_config('Ti/16x2', hidden_size=64, num_layers=2, mlp_dim=128, num_heads=4)
  for task in config.tasks.values():
    task.batch_size = task.eval_batch_size = 2
    task.input.num_frames, task.input.crop_size = 8, 64
    task.transfer_steps = steps_per_task
  # A mixed-batch phase trains every task at each step: steps_per_task steps.
  config.schedule.phases = [
      dict(phase, steps=steps_per_task * (1 if phase.get('mixed_batches') else len(phase['mixture'])))
      for phase in config.schedule.phases]
  config.optimizer.warmup_steps = 2
  config.log_every = config.eval_every = config.checkpoint_every = steps_per_task


def use_synthetic_datasets(config: ml_collections.ConfigDict) -> None:
  """Swaps every task's dataset for the built-in synthetic one of its kind (rendered into data_dir on
  first use, nothing to download), with a model sized for its 40x40 frames; after
  shrink_for_local_run."""
  # Imported here, not at the top: the benches import this module where TFDS is absent.
  from vivit_cofinetune.data.builders import synthetic  # pylint: disable=g-import-not-at-top
  config.model = vivit_config('Ti/8x2', hidden_size=64, num_layers=2, mlp_dim=128, num_heads=4)
  # Kind -> (dataset, classes, the task fields that dataset needs).
  synthetic_datasets = {
      'localisation': ('synthetic_actions_loc', synthetic.LOC_CLASS_NAMES,
                       dict(max_boxes=4)),  # 1-3 actors per clip
      'classification': ('synthetic_actions_cls', synthetic.CLS_CLASS_NAMES, {}),
  }
  for task in config.tasks.values():
    dataset, classes, fields = synthetic_datasets[task.kind]
    task.dataset.name = dataset
    task.num_classes = len(classes)
    task.update(fields)
    task.input.crop_size = 32
    task.input.num_test_clips = task.input.num_test_crops = 1
    task.eval_batch_size = 16

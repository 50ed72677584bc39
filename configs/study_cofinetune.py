"""One run of the co-finetuning study: a tiny ViViT on the study's synthetic sets, one schedule.

  python -m vivit_cofinetune.main --config=configs/study_cofinetune.py:schedule=pretrain --workdir=/tmp/study/pretrain
  python -m vivit_cofinetune.main --config=configs/study_cofinetune.py:schedule=cofinetune_2,seed=1,init=/tmp/study/pretrain \
      --workdir=/tmp/study/cofinetune_2_seed1

The study driver (`python -m vivit_cofinetune.experiments.study --seeds=3 --output=DIR`) runs every
schedule this way (3 seeds: 72.5 min on the project's 2-core CPU VM). Its localisation mAP,
mean of 3 seeds: downstream 0.279, transfer 0.369, transfer_continued 0.376, cofinetune_1 0.366,
cofinetune_2 0.279, cofinetune_2_control 0.232 (chance 0.111); docs/results.md has the whole table,
the regime and the reading.

The regime is the paper's in miniature (data/builders/synthetic.py): the backbone starts from a
pretraining run on static colour-labelled clips (standing in for ImageNet); the downstream
localisation set is small and long-tailed; the two upstream classification sets are larger,
balanced, and hold the concepts of the rare localisation classes.

Schedules (`schedule=`), each `steps` steps of 16 clips, so every one trains on the same number of
clips; all but `downstream` read `steps // 2` batches of localisation and `steps // 2` of upstream
data (but `cofinetune_2_size` and `cofinetune_2_uniform`, whose weights split the steps otherwise):
  downstream            localisation only, for all steps;
  transfer              upstream set A, then localisation (each phase its own warm-up and cosine);
  transfer_continued    the same, with one warm-up and cosine over both phases;
  cofinetune_1          one phase: localisation + upstream A, weighted by their transfer steps;
  cofinetune_2          one phase: localisation + upstream A + upstream B (the upstream steps
                        halved), one task per step ('steps' sampling, the paper's recipe);
  cofinetune_2_size     the same tasks, steps split by training-set size ('size' sampling);
  cofinetune_2_uniform  the same tasks, steps split equally ('uniform' sampling);
  cofinetune_2_mixed    the same tasks in every step (mixed batches of 8 localisation + 4 + 4
                        upstream clips, losses summed): the same clips of each set as cofinetune_2;
  cofinetune_finetune   cofinetune_2 with a quarter of the localisation steps moved into a last,
                        localisation-only phase;
  cofinetune_2_control  cofinetune_2 with the upstream tasks' `trains_backbone=False`: their heads
                        train on the backbone's features but their gradients stop before it, so
                        whatever co-finetuning gains from shared knowledge, this run must lose;
  pretrain              the shared starting point: `pretrain_steps` on the colour set, from scratch.

Other arguments: `alone=TASK` trains only TASK, for the steps (and batches) the schedule gives it
(the measure of what a task reaches trained alone; not a study schedule, it trains fewer clips);
`backbone_state=shared|per_task` is config.optimizer.backbone_state (state.py); `tiny=True` runs
the same schedule on the tests' tiny sets at a few steps. Every run evaluates every task eight times
over training (`eval_every = steps // 8`; twice with `tiny=True`), so the study can plot its curves.
"""
import os

import ml_collections

from vivit_cofinetune.config_lib import ConfigError
from vivit_cofinetune.config_lib import config_args
from vivit_cofinetune.config_lib import input_config
from vivit_cofinetune.config_lib import task_config
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune.data.builders import synthetic
from vivit_cofinetune.models.vivit import vivit_config

SCHEDULES = ('downstream', 'transfer', 'transfer_continued', 'cofinetune_1', 'cofinetune_2',
             'cofinetune_2_size', 'cofinetune_2_uniform', 'cofinetune_2_mixed',
             'cofinetune_finetune', 'cofinetune_2_control')
UPSTREAM = ('upstream_a', 'upstream_b')
BATCH_SIZE = 16


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  # The regime docs/results.md chose and measured: 4,000 steps, one backbone AdamW state per task.
  arg = config_args(arg, schedule='cofinetune_1', seed=0, steps=4000, pretrain_steps=480, init='',
                    tiny=False, alone='', backbone_state='per_task')
  if arg.schedule not in SCHEDULES + ('pretrain',):
    raise ConfigError(f'config argument schedule={arg.schedule!r}: expected one of '
                      f"{list(SCHEDULES + ('pretrain',))}")
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')
  # The demo's backbone (docs/architecture.md: no CLS token, mean pooling learns faster from little data).
  config.model = vivit_config('Ti/8x2', hidden_size=64, num_layers=4, mlp_dim=128, num_heads=4,
                              classifier='mean')
  clips = input_config(num_frames=8, crop_size=32, frame_stride=2, min_crop_area=0.5)
  batch = 4 if arg.tiny else BATCH_SIZE

  def dataset(name: str, study_config: str) -> str:
    return f'{name}/tiny' if arg.tiny else f'{name}/{study_config}'

  def classification(study_config: str, classes: tuple[str, ...]) -> ml_collections.ConfigDict:
    # The tiny set has every action class, whatever the study set it stands in for holds.
    num_classes = len(synthetic.CLS_CLASS_NAMES if arg.tiny else classes)
    return task_config('classification', dataset('synthetic_actions_cls', study_config),
                       num_classes=num_classes, batch_size=batch, eval_batch_size=2 * batch,
                       input=clips, label_smoothing=0.1, head=dict(pooling='mean', dropout_rate=0.0))

  if arg.schedule == 'pretrain':
    config.tasks = dict(pretrain=classification('study_pretrain', synthetic.COLOUR_NAMES))
    config.schedule = dict(phases=[dict(steps=arg.pretrain_steps, mixture=dict(pretrain=1.0))])
    config.init_from = dict(path='', reinit=(), freeze=())
  else:
    config.tasks = dict(
        loc=task_config('localisation', dataset('synthetic_actions_loc', 'study'),
                        num_classes=len(synthetic.LOC_CLASS_NAMES), batch_size=batch,
                        eval_batch_size=2 * batch, input=clips, max_boxes=4,
                        head=dict(roi_size=4, sampling_ratio=2, dropout_rate=0.0)),
        upstream_a=classification('study_upstream_a', synthetic.CLS_CLASS_NAMES))
    phases = finetuning_phases(arg.schedule, arg.steps)
    if any('upstream_b' in phase['mixture'] for phase in phases):
      config.tasks.upstream_b = classification('study_upstream_b', synthetic.UPSTREAM_B_CLASS_NAMES)
    if arg.schedule == 'cofinetune_2_mixed':
      # Each step's 16 clips split as cofinetune_2 splits its steps: the same clips of each set.
      for name, share in (('loc', 2), ('upstream_a', 4), ('upstream_b', 4)):
        config.tasks[name].batch_size = batch // share
    if arg.schedule == 'cofinetune_2_control':
      for name in UPSTREAM:
        config.tasks[name].trains_backbone = False
    if arg.alone:
      phases = alone_phases(phases, arg.alone)
      config.tasks = {arg.alone: config.tasks[arg.alone]}
    config.schedule = dict(phases=phases)
    # The pretrained backbone; every head starts fresh (zero), as the pretraining head is not used.
    config.init_from = dict(path=arg.init, reinit=(), freeze=())

  config.optimizer = dict(name='adamw', base_learning_rate=1e-3, warmup_steps=2 if arg.tiny else 50,
                          weight_decay=1e-4, grad_clip_norm=1.0,
                          schedule_span='run' if arg.schedule == 'transfer_continued' else 'phase',
                          backbone_state=arg.backbone_state)
  config.mesh = dict(data=-1, fsdp=1, model=1)
  total_steps = sum(phase['steps'] for phase in config.schedule.phases)
  # Eight evaluations over training for the curves: does a schedule overfit, or forget? (Two in a
  # tiny code-path check, which only needs a curve to exist.)
  config.eval_every = config.log_every = max(1, total_steps // (2 if arg.tiny else 8))
  config.checkpoint_every = total_steps
  config.checkpoint_every_minutes = 0.0
  config.keep_checkpoints = 1
  return config


def finetuning_phases(schedule: str, steps: int) -> list[dict]:
  """The phases of a finetuning schedule of `steps` steps (see the module docstring).

  Mixture weights are step counts, so each phase's split over tasks is exact (schedule.py).
  """
  if steps % 8:
    raise ConfigError(f'config argument steps={steps}: expected a multiple of 8 (the schedules '
                      'split it in halves, quarters and eighths)')
  loc, upstream = steps // 2, steps // 2
  if schedule == 'downstream':
    return [dict(steps=steps, mixture=dict(loc=1.0))]
  if schedule in ('transfer', 'transfer_continued'):
    return [dict(steps=upstream, mixture=dict(upstream_a=1.0)),
            dict(steps=loc, mixture=dict(loc=1.0))]
  if schedule == 'cofinetune_1':
    return [dict(steps=steps, mixture=dict(loc=loc, upstream_a=upstream))]
  if schedule in ('cofinetune_2', 'cofinetune_2_control'):
    return [dict(steps=steps, mixture=dict(loc=loc, upstream_a=upstream // 2,
                                           upstream_b=upstream // 2))]
  if schedule in ('cofinetune_2_size', 'cofinetune_2_uniform'):
    sampling = schedule.rsplit('_', 1)[1]
    return [dict(steps=steps, mixture=dict(loc=sampling, upstream_a=sampling, upstream_b=sampling))]
  if schedule == 'cofinetune_2_mixed':
    return [dict(steps=steps, mixture=dict(loc='uniform', upstream_a='uniform',
                                           upstream_b='uniform'), mixed_batches=True)]
  if schedule == 'cofinetune_finetune':
    finetune = loc // 4
    return [dict(steps=steps - finetune, mixture=dict(loc=loc - finetune, upstream_a=upstream // 2,
                                                      upstream_b=upstream // 2)),
            dict(steps=finetune, mixture=dict(loc=1.0))]
  raise ConfigError(f'config argument schedule={schedule!r}: expected one of {list(SCHEDULES)}')


def alone_phases(phases: list[dict], task: str) -> list[dict]:
  """The phases with every task but `task` taken out: `task` alone, for the steps it had."""
  alone = []
  for phase in phases:
    if task not in phase['mixture']:
      continue
    weights = phase['mixture']
    numeric = all(isinstance(weight, (int, float)) for weight in weights.values())
    if not phase.get('mixed_batches') and not numeric:
      raise ConfigError(f'config argument alone={task}: its steps in a schedule weighted by '
                        f'{sorted(set(map(str, weights.values())))} depend on the dataset sizes; '
                        'use a schedule with numeric weights')
    steps = (phase['steps'] if phase.get('mixed_batches') else
             schedule_lib.step_counts(weights, phase['steps'])[task])
    alone.append(dict(steps=steps, mixture={task: 1.0}))
  if not alone:
    names = sorted({name for phase in phases for name in phase['mixture']})
    raise ConfigError(f'config argument alone={task!r}: the schedule has no such task; expected one '
                      f'of {names}')
  return alone

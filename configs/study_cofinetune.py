"""One run of the co-finetuning study: a tiny ViViT on the study's synthetic sets, one schedule.

  python -m vivit_cofinetune.main --config=configs/study_cofinetune.py:schedule=pretrain --workdir=/tmp/study/pretrain
  python -m vivit_cofinetune.main --config=configs/study_cofinetune.py:schedule=cofinetune_2,seed=1,init=/tmp/study/pretrain \
      --workdir=/tmp/study/cofinetune_2_seed1

The study driver (`python -m vivit_cofinetune.experiments.study --seeds=3 --output=DIR`) runs every
schedule this way. Sized for the project's 2-core CPU VM: 18 runs of 400 steps in 36 min there under
load. Expected (docs/results.md, mean of 3 seeds): localisation mAP 0.131-0.153 (chance 0.111),
downstream-only best and co-finetuning above transfer; at 400 steps every model is still near chance
and the upstream tasks at chance, too short to test the paper's claim (`steps=4000` is).

The regime is the paper's in miniature (data/builders/synthetic.py): the backbone starts from a
pretraining run on static colour-labelled clips (standing in for ImageNet); the downstream
localisation set is small and long-tailed; the two upstream classification sets are larger,
balanced, and hold the concepts of the rare localisation classes.

Schedules (`schedule=`), each `steps` steps of batch 16, so every one sees the same number of
training examples; all but `downstream` see the same `steps // 2` localisation batches and
`steps // 2` upstream batches:
  downstream           localisation only, for all steps;
  transfer             upstream set A, then localisation (each phase its own warm-up and cosine);
  transfer_continued   the same, with one warm-up and cosine over both phases;
  cofinetune_1         one phase: localisation + upstream A, weighted by their transfer steps;
  cofinetune_2         one phase: localisation + upstream A + upstream B (the upstream steps halved);
  cofinetune_finetune  cofinetune_2 with a quarter of the localisation steps moved into a last,
                       localisation-only phase;
  pretrain             the shared starting point: `pretrain_steps` on the colour set, from scratch.
`tiny=True` runs the same schedule on the tests' tiny sets at a few steps.
"""
import os

import ml_collections

from vivit_cofinetune.config_lib import ConfigError
from vivit_cofinetune.config_lib import config_args
from vivit_cofinetune.config_lib import input_config
from vivit_cofinetune.config_lib import task_config
from vivit_cofinetune.data.builders import synthetic
from vivit_cofinetune.models.vivit import vivit_config

SCHEDULES = ('downstream', 'transfer', 'transfer_continued', 'cofinetune_1', 'cofinetune_2',
             'cofinetune_finetune')
BATCH_SIZE = 16


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  arg = config_args(arg, schedule='cofinetune_1', seed=0, steps=400, pretrain_steps=480, init='',
                    tiny=False)
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
    config.schedule = dict(phases=finetuning_phases(arg.schedule, arg.steps))
    if any('upstream_b' in phase['mixture'] for phase in config.schedule.phases):
      config.tasks.upstream_b = classification('study_upstream_b', synthetic.UPSTREAM_B_CLASS_NAMES)
    # The pretrained backbone; every head starts fresh (zero), as the pretraining head is not used.
    config.init_from = dict(path=arg.init, reinit=(), freeze=())

  config.optimizer = dict(name='adamw', base_learning_rate=1e-3, warmup_steps=2 if arg.tiny else 50,
                          weight_decay=1e-4, grad_clip_norm=1.0,
                          schedule_span='run' if arg.schedule == 'transfer_continued' else 'phase')
  config.mesh = dict(data=-1, fsdp=1, model=1)
  total_steps = sum(phase['steps'] for phase in config.schedule.phases)
  config.log_every = max(1, total_steps // 8)
  config.eval_every = total_steps  # Once, at the end: the study reports final metrics only.
  config.checkpoint_every = total_steps
  config.checkpoint_every_minutes = 0.0
  config.keep_checkpoints = 1
  return config


def finetuning_phases(schedule: str, steps: int) -> list[dict]:
  """The phases of a finetuning schedule of `steps` steps (see the module docstring).

  Mixture weights are step counts, so each phase's split over tasks is exact (data/mixture.py).
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
  if schedule == 'cofinetune_2':
    return [dict(steps=steps, mixture=dict(loc=loc, upstream_a=upstream // 2,
                                           upstream_b=upstream // 2))]
  if schedule == 'cofinetune_finetune':
    finetune = loc // 4
    return [dict(steps=steps - finetune, mixture=dict(loc=loc - finetune, upstream_a=upstream // 2,
                                                      upstream_b=upstream // 2)),
            dict(steps=finetune, mixture=dict(loc=1.0))]
  raise ConfigError(f'config argument schedule={schedule!r}: expected one of {list(SCHEDULES)}')

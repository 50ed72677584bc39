"""Co-finetunes ViViT on AVA v2.2 (localisation) + Kinetics-700 (classification), as in the paper.

  python -m vivit_cofinetune.main --config=configs/ava_kinetics_cofinetune.py:size=L \
      --workdir=gs://BUCKET/ava_kinetics_L --config.data_dir=gs://BUCKET/tensorflow_datasets
  Sized for a TPU v5p-64 / 64-GPU pod (global batch 64 per task). Paper: 36.1 mAP on AVA v2.2 for its
  best setting (more upstream datasets: configs/ava_multi_cofinetune.py); this task set: not yet
  measured here (docs/results.md).

Starts from the ImageNet-21k ViT-L/16 inflated to ViViT (2D patch kernel on the central frame,
position embeddings repeated over time), converted once:
  gsutil cp gs://vit_models/imagenet21k/ViT-L_16.npz /tmp/
  python -m vivit_cofinetune.tools.convert_checkpoint --from=big_vision_vit --input=/tmp/ViT-L_16.npz \
      --config=configs/ava_kinetics_cofinetune.py:size=L \
      --output=$HOME/vivit_checkpoints/vit_i21k_L16_to_vivit_32x224
`:init=PATH` reads it from elsewhere (a gs:// copy for a pod), `:init=none` trains from scratch.
Or start from a video-pretrained backbone, `:init=NAME` (models/pretrained.py; docs/models.md has
the table), converted once for these 32x224x224 clips to ~/vivit_checkpoints/NAME_32x224; it sets
the model's sizes and numerics (`size=` does not apply). Its authors report:
  videomae_L     MCG-NJU/videomae-large-finetuned-kinetics, --from=videomae: AVA v2.2 37.0 mAP
  videomae_v2_g  VideoMAE V2 vit_g_hybrid_pt_1200e_k710_ft.pth, --from=videomae: AVA v2.2 42.6 mAP
  vjepa2_L       facebook/vjepa2-vitl-fpc64-256, --from=vjepa2: no AVA result reported
  vivit_B_k400   google/vivit-b-16x2-kinetics400, --from=hf_vivit: no AVA result reported
e.g. python -m vivit_cofinetune.tools.convert_checkpoint --from=videomae \
         --input=/path/to/videomae-large-finetuned-kinetics --input_shape=32,224,224 \
         --output=$HOME/vivit_checkpoints/videomae_L_32x224
VideoMAE's own fine-tuning uses layer-wise learning-rate decay: `--config.optimizer.layer_decay=0.75`.

Variants (`:a=1,b=2`):
  size=B|L             the backbone (B: ViT-B_16.npz; converted to vit_i21k_B16_to_vivit_32x224).
  transfer=True        the transfer-learning baseline: Kinetics, then AVA, same steps per task.
  then_finetune=True   co-finetunes, then finetunes on AVA alone for finetune_steps (10,000).
  sampling=steps|size|uniform|mixed   which task each step trains (data/mixture.py): each dataset's
                       steps of the transfer schedule (default, the paper's), proportional to
                       training-set size, or equal steps; 'mixed' trains every task at every step
                       (mixed batches, losses summed) for the steps per task.
  local=True           tiny model, 8x64x64 clips, batch 2, 10 steps per task, no init: a CPU run on
                       the same datasets (tests/test_paper_config.py prepares them from fake releases).
  synthetic=True       like local, on the built-in synthetic datasets: runs with no data at all.

Needs the TFDS datasets `ava_v2_2` and `kinetics700` prepared under config.data_dir from the official
releases (docs/data.md: `python -m vivit_cofinetune.data.prepare ava_v2_2 --manual_dir=... --data_dir=...`).
AVA is evaluated at the official protocol: person-detector boxes above score 0.8 (PySlowFast's AVA
setting), every box of a keyframe, eval frames letterboxed (aspect ratio kept), frame mAP on the official
60 classes against the val CSV and exclusions stored with the prepared dataset; the detections go to
WORKDIR/eval/step_N/ava_detections.csv, and `python -m vivit_cofinetune.metrics.ava` on that file gives
the same mAP.
Values marked "reconstructed" (vivit_cofinetune/paper_config.py) follow the authors' ViViT/PolyViT
practice, not a quote of the paper.
"""
import os

import ml_collections

from vivit_cofinetune import paper_config
from vivit_cofinetune.config_lib import config_args

TRANSFER_STEPS = paper_config.TRANSFER_STEPS


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  arg = config_args(arg, size='L', transfer=False, then_finetune=False, sampling='steps',
                    finetune_steps=paper_config.FINETUNE_STEPS, init='imagenet21k', local=False,
                    synthetic=False)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = os.path.expanduser('~/tensorflow_datasets')
  config.model = paper_config.model(arg.size, arg.init)
  config.tasks = dict(
      ava=paper_config.ava_task('ava_v2_2', transfer_steps=TRANSFER_STEPS['ava_v2_2']),
      kinetics700=paper_config.classification_task(
          'kinetics700', transfer_steps=TRANSFER_STEPS['kinetics700']),
  )
  config.schedule = dict(phases=paper_config.phases(
      config.tasks, transfer=arg.transfer, then_finetune=arg.then_finetune, sampling=arg.sampling,
      finetune_steps=arg.finetune_steps))
  paper_config.trainer_settings(config)
  config.init_from = paper_config.init_from(arg.init, arg.size, local=arg.local or arg.synthetic)

  if arg.local or arg.synthetic:
    paper_config.shrink_for_local_run(config)
  if arg.synthetic:
    paper_config.use_synthetic_datasets(config)
  return config

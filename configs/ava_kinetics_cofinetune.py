"""Co-finetunes ViViT on AVA v2.2 (localisation) + Kinetics-700 (classification), as in the paper.

  python -m vivit_cofinetune.main --config=configs/ava_kinetics_cofinetune.py:size=L \
      --workdir=gs://BUCKET/ava_kinetics_L --config.data_dir=gs://BUCKET/tensorflow_datasets
  Sized for a TPU v5p-64 / 64-GPU pod (global batch 64 per task). Paper: 36.1 mAP on AVA v2.2 for its
  best setting (more upstream datasets: configs/ava_multi_cofinetune.py); this task set: not yet
  measured here (docs/results.md).

Starts from the ImageNet-21k ViT-L/16 inflated to ViViT (2D patch kernel on the central frame,
position embeddings repeated over time), converted once (the same directory serves every paper config
of that size):
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

Variants (`:a=1,b=2`; configs/common.py `paper_config` says what each does): size=B|L,
transfer=True (Kinetics, then AVA), then_finetune=True, sampling=steps|size|uniform|mixed,
init=NAME|PATH|none, local=True (a CPU run on the same datasets; tests/test_paper_config.py prepares them
from fake releases), synthetic=True (no data at all).

Needs the TFDS datasets `ava_v2_2` and `kinetics700` prepared under config.data_dir from the official
releases (docs/data.md: `python -m vivit_cofinetune.data.prepare ava_v2_2 --manual_dir=... --data_dir=...`).
AVA is evaluated at the official protocol: person-detector boxes above score 0.8 (PySlowFast's AVA
setting), every box of a keyframe, eval frames letterboxed (aspect ratio kept), frame mAP on the official
60 classes against the val CSV and exclusions stored with the prepared dataset; the detections go to
WORKDIR/eval/step_N/ava_detections.csv, and `python -m vivit_cofinetune.metrics.ava` on that file gives
the same mAP.
Steps per dataset and other values marked "reconstructed" are in configs/common.py.
"""
import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  return common.paper_config(arg, tasks=dict(
      ava=common.ava_task('ava_v2_2'),
      kinetics700=common.classification_task('kinetics700')))

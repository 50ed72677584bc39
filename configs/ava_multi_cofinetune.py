"""Co-finetunes ViViT on AVA v2.2 + Kinetics-700 + Moments in Time + SSv2: the paper's best setting.

  python -m vivit_cofinetune.main --config=configs/ava_multi_cofinetune.py:size=L \
      --workdir=gs://BUCKET/ava_multi_L --config.data_dir=gs://BUCKET/tensorflow_datasets
  Sized for a TPU v5p-64 / 64-GPU pod (global batch 64 per task, one task per step). Paper: 36.1 mAP
  on AVA v2.2 (its best setting, ViViT-L); ours: not yet measured here (docs/results.md).

Starts from the ImageNet-21k ViT-L/16 inflated to ViViT, converted once as
configs/ava_kinetics_cofinetune.py says (the same directory serves every paper config of that size;
pass --config=configs/ava_multi_cofinetune.py:size=L to the converter).
`:init=PATH` reads it from elsewhere (a gs:// copy for a pod), `:init=none` trains from scratch.
Or start from a video-pretrained backbone, `:init=NAME` with NAME one of videomae_L,
videomae_v2_g, vjepa2_L, vivit_B_k400: configs/ava_kinetics_cofinetune.py gives their
conversion and what their authors report, docs/models.md the whole table.

Variants (`:a=1,b=2`; configs/common.py `paper_config` says what each does): size=B|L,
transfer=True (the three upstream sets together, mixed by `sampling`, then AVA), then_finetune=True,
sampling=steps|size|uniform|mixed, init=NAME|PATH|none, local=True (a CPU run on the same datasets;
tests/test_paper_configs.py prepares them from fake releases), synthetic=True (no data at all).

Needs the TFDS datasets `ava_v2_2`, `kinetics700`, `moments_in_time` and `ssv2` prepared under
config.data_dir from the official releases (docs/data.md). AVA is evaluated at the official protocol
(configs/ava_kinetics_cofinetune.py says how); the classification sets by top-1 over 4 clips x 3 crops.
Steps per dataset and other values marked "reconstructed" are in configs/common.py.
"""
import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  return common.paper_config(arg, tasks=dict(
      ava=common.ava_task('ava_v2_2'),
      **{name: common.classification_task(name)
         for name in ('kinetics700', 'moments_in_time', 'ssv2')}))

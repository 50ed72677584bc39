"""Co-finetunes ViViT on the AVA-Kinetics set (AVA v2.2 + AVA-Kinetics) + Kinetics-700, MiT, SSv2.

Not to be confused with configs/ava_kinetics_cofinetune.py (AVA v2.2 + the Kinetics-700
classification set): here one localisation task reads both AVA datasets as one
(`dataset.name='ava_v2_2+ava_kinetics'`, docs/data.md), trained on both train splits and scored
against both stored val CSVs together, with the three upstream sets of configs/ava_multi_cofinetune.py.

  python -m vivit_cofinetune.main --config=configs/avakinetics_set_multi_cofinetune.py:size=L \
      --workdir=gs://BUCKET/avakinetics_set_L --config.data_dir=gs://BUCKET/tensorflow_datasets
  Sized for a TPU v5p-64 / 64-GPU pod (global batch 64 per task, one task per step). Paper: 36.2 mAP
  on AVA-Kinetics; ours: not yet measured here (docs/results.md).

Starts from the ImageNet-21k ViT-L/16 inflated to ViViT, converted once as
configs/ava_kinetics_cofinetune.py says (the same directory serves every paper config of that size;
pass --config=configs/avakinetics_set_multi_cofinetune.py:size=L to the converter).
`:init=PATH` reads it from elsewhere (a gs:// copy for a pod), `:init=none` trains from scratch.
Or start from a video-pretrained backbone, `:init=NAME` with NAME one of videomae_L,
videomae_v2_g, vjepa2_L, vivit_B_k400: configs/ava_kinetics_cofinetune.py gives their
conversion and what their authors report, docs/models.md the whole table.

Variants (`:a=1,b=2`; configs/common.py `paper_config` says what each does): size=B|L,
transfer=True (the three upstream sets together, mixed by `sampling`, then AVA-Kinetics),
then_finetune=True (then AVA-Kinetics alone), sampling=steps|size|uniform|mixed, init=NAME|PATH|none,
local=True (a CPU run on the same datasets; tests/test_paper_configs.py prepares them from fake
releases), synthetic=True (no data at all).

Needs the TFDS datasets `ava_v2_2`, `ava_kinetics`, `kinetics700`, `moments_in_time` and `ssv2`
prepared under config.data_dir from the official releases (docs/data.md). AVA-Kinetics is evaluated
at the official AVA protocol (configs/ava_kinetics_cofinetune.py says how) on both val sets; the
classification sets by top-1 over 4 clips x 3 crops.
Steps per dataset and other values marked "reconstructed" are in configs/common.py.
"""
import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  return common.paper_config(arg, tasks=dict(
      ava=common.ava_task('ava_v2_2+ava_kinetics'),
      **{name: common.classification_task(name)
         for name in ('kinetics700', 'moments_in_time', 'ssv2')}))

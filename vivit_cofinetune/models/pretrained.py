"""Named video-pretrained starting points (`:init=NAME` in the paper configs).

Each names a public checkpoint, the converter command that makes our directory from it (converted
once, for the paper's 32x224x224 clips), where the configs read that directory from, and the model
fields our ViViT needs to reproduce its numerics (models/video_checkpoints.py says why each is what
it is). Reported results are the checkpoint authors' own (docs/models.md has the table).
"""
import dataclasses
import os
from typing import Any

CONVERTED_ROOT = '~/vivit_checkpoints'


@dataclasses.dataclass(frozen=True)
class StartingPoint:
  checkpoint: str  # the public name the user downloads
  format: str  # tools.convert_checkpoint --from
  model: dict[str, Any]  # fields of config.model (sizes included: `size=` does not apply)
  reported: str  # what its authors report


_L = dict(hidden_size=1024, num_layers=24, mlp_dim=4096, num_heads=16, patch_size=(2, 16, 16))
_VIDEOMAE = dict(classifier='mean', position_embedding='learned', final_norm='pooled',
                 key_bias=False, gelu='exact')

STARTING_POINTS = {
    'videomae_L': StartingPoint(
        checkpoint='MCG-NJU/videomae-large-finetuned-kinetics (Hugging Face directory)',
        format='videomae', model=dict(_L, **_VIDEOMAE, layer_norm_epsilon=1e-12),
        reported='AVA v2.2 37.0 mAP (VideoMAE ViT-L, Kinetics-400 pre-training + labels)'),
    'videomae_v2_g': StartingPoint(
        checkpoint='VideoMAE V2 vit_g_hybrid_pt_1200e_k710_ft.pth (original .pth)',
        format='videomae',
        model=dict(hidden_size=1408, num_layers=40, mlp_dim=6144, num_heads=16,
                   patch_size=(2, 14, 14), **_VIDEOMAE, layer_norm_epsilon=1e-6),
        reported='AVA v2.2 42.6 mAP (VideoMAE V2-g, K710 fine-tuned)'),
    'vjepa2_L': StartingPoint(
        checkpoint='facebook/vjepa2-vitl-fpc64-256 (Hugging Face directory)', format='vjepa2',
        model=dict(_L, classifier='mean', position_embedding='rope_3d', gelu='exact'),
        reported='no AVA result reported by its authors (frozen-probe video classification only)'),
    'vivit_B_k400': StartingPoint(
        checkpoint='google/vivit-b-16x2-kinetics400 (Hugging Face directory)', format='hf_vivit',
        model=dict(hidden_size=768, num_layers=12, mlp_dim=3072, num_heads=12,
                   patch_size=(2, 16, 16), classifier='token', position_embedding='learned'),
        reported='no AVA result reported; Kinetics-400 classification'),
}


def directory(name: str) -> str:
  """Where the configs read the converted `name` from."""
  return os.path.expanduser(f'{CONVERTED_ROOT}/{name}_32x224')


def convert_command(name: str) -> str:
  """The command that writes `directory(name)` from the downloaded checkpoint."""
  point = STARTING_POINTS[name]
  return (f'python -m vivit_cofinetune.tools.convert_checkpoint --from={point.format} '
          f'--input=/path/to/{point.checkpoint.split()[0].split("/")[-1]} '
          f'--input_shape=32,224,224 --output={CONVERTED_ROOT}/{name}_32x224')

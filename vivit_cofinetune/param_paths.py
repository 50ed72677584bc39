"""Params by name: the '/'-joined paths ('backbone/encoder/layers/mlp/hidden/kernel') that freeze and
reinit patterns match, checkpoints are merged by and converted checkpoints are renamed with.
"""
from collections.abc import Mapping


def name(path) -> str:
  """'a/b/c' for a jax key path (DictKey, GetAttrKey, SequenceKey, ...) or a tuple of plain keys."""
  return '/'.join(str(getattr(key, 'key', getattr(key, 'name', getattr(key, 'idx', key))))
                  for key in path)


def flatten(tree: Mapping) -> dict:
  """Nested mappings -> {'a/b/c': leaf}, in the order of the mappings."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update({f'{key}/{sub}': leaf for sub, leaf in flatten(value).items()})
    else:
      flat[str(key)] = value
  return flat


def unflatten(flat: Mapping) -> dict:
  """{'a/b/c': leaf} -> nested dicts."""
  tree = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree

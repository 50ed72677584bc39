"""Reads PyTorch .pth/.pt checkpoints without PyTorch, and without running any code they name.

`torch.save` writes a zip archive: `<prefix>/data.pkl` (a pickle of the saved object) and one raw
little-endian buffer per tensor storage, `<prefix>/data/<key>`. The pickle rebuilds tensors by
calling `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` on storages it names by
persistent id ('storage', torch.FloatStorage, key, location, numel). Our unpickler maps exactly those
globals, and plain containers, to numpy; any other global (the way a pickle runs code, e.g.
`os.system`) is refused before it is called, with an error naming it.
"""
import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

# torch storage classes -> numpy dtypes.
_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class UnsafePickleError(ValueError):
  """The pickle names a global that is not a tensor or plain container: it would run code."""


class _Storage:
  """A storage's flat numpy buffer (read lazily from the archive)."""

  def __init__(self, buffer: np.ndarray):
    self.buffer = buffer


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *unused) -> np.ndarray:
  """torch._utils._rebuild_tensor_v2: a strided view of the storage, copied out."""
  del unused  # requires_grad, backward hooks, metadata
  itemsize = storage.buffer.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage.buffer[offset:], shape=tuple(size),
                                         strides=tuple(step * itemsize for step in stride))
  return np.array(view)


def _rebuild_parameter(data: np.ndarray, *unused) -> np.ndarray:
  """torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
  del unused
  return data


# (module, name) -> what it is rebuilt as. Nothing else is ever looked up.
_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    **{('torch', name): name for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Rebuilds tensors and plain containers only (see the module docstring)."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
    super().__init__(file)
    self._archive, self._prefix, self._source = archive, prefix, source
    self._storages = {}

  def find_class(self, module: str, name: str):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise UnsafePickleError(
          f'{self._source}: the pickle names the global {module}.{name}, which is not a tensor '
          'or a plain container; refusing to load it (it could run code)')
    return _ALLOWED_GLOBALS[(module, name)]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
            and pid[1] in _STORAGE_DTYPES):
      raise UnsafePickleError(f'{self._source}: unexpected persistent id {pid!r} (expected a '
                              'tensor storage)')
    _, storage_type, key, _, numel = pid
    if key not in self._storages:
      data = self._archive.read(f'{self._prefix}/data/{key}')
      buffer = np.frombuffer(data, dtype=np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder('<'))
      if buffer.size < numel:
        raise ValueError(f'{self._source}: storage {key} holds {buffer.size} elements, the pickle '
                         f'says {numel}')
      self._storages[key] = _Storage(buffer)
    return self._storages[key]


def load(path: str):
  """The object `torch.save` wrote to path (a zip archive), tensors as numpy arrays.

  Raises UnsafePickleError on any global other than tensors, storages and OrderedDict, and a
  ValueError for the legacy (pre-1.6, non-zip) format.
  """
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path}: not a PyTorch zip archive (files saved by torch >= 1.6 are); '
                     're-save it with a current torch, or convert it to safetensors')
  with zipfile.ZipFile(path) as archive:
    pickles = [name for name in archive.namelist() if name.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{path}: expected one <prefix>/data.pkl in the archive, found {pickles}')
    prefix = pickles[0][:-len('/data.pkl')]
    byteorder = f'{prefix}/byteorder'
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b'little':
      raise ValueError(f'{path}: big-endian tensors are not supported')
    with archive.open(pickles[0]) as file:
      return _RestrictedUnpickler(file, archive, prefix, path).load()

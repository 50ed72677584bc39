"""Where a compiled step's time goes: seconds per step by kind of XLA op, from a jax.profiler trace.

  from bench import op_profile
  seconds = op_profile.seconds_by_kind(lambda: step(...), steps=2)   # {kind: seconds per step}

The trace's XLA op events are summed per step and grouped by what the op does, read from its HLO
name: matmuls (dots and the fusions built around them), the scanned layers' writes of their
per-layer results into stacked buffers (dynamic-update-slice) and reads of them (dynamic-slice),
buffer initialisation (broadcast), copies and transposes, other fusions (elementwise and
reductions), and the rest. On the CPU backend the events are the thunks XLA's worker threads run
(each a whole op, itself spread over the threads), so the kinds add up to about the step's wall
time; on a GPU or TPU they are the device's op events.
"""
import collections
import pathlib
import re
import tempfile
from typing import Callable

import jax

# First match wins: a dot fused with the elementwise ops around it is a matmul; a fusion that writes
# one layer's slice of a stacked buffer is a scan write even when other ops are fused into it.
KINDS = (
    ('matmul', re.compile(r'(^|[_.-])(dot|ynn|xnn|onednn|gemm|cublas|cutlass|conv|convolution)'
                          r'([_.\d]|$)|custom-call')),
    ('scan writes (dynamic-update-slice)', re.compile(r'dynamic-update-slice')),
    ('scan reads (dynamic-slice)', re.compile(r'dynamic-slice')),
    ('buffer initialisation (broadcast)', re.compile(r'broadcast')),
    ('copies and transposes', re.compile(r'copy|transpose')),
    ('other fusions', re.compile(r'fusion')),
)
OTHER = 'other'
# Events of the executor itself, not of an op.
_NOT_OPS = re.compile(r'^(ThunkExecutor|SlinkyThreadPool|end: |\$)')


def kind_of(op_name: str) -> str:
  """The kind of an XLA op from its HLO name ('ynn_fusion.40' -> 'matmul')."""
  for kind, pattern in KINDS:
    if pattern.search(op_name):
      return kind
  return OTHER


def _op_events(space):
  """(name, seconds) of every XLA op event: the device's if the trace has one, else the host's
  XLA worker threads' (the CPU backend)."""
  devices = [plane for plane in space.planes if re.match(r'/device:(GPU|TPU)', plane.name)]
  for plane in devices or [plane for plane in space.planes if plane.name == '/host:CPU']:
    names = {key: meta.name for key, meta in plane.event_metadata.items()}
    for line in plane.lines:
      if (line.name != 'XLA Ops') if devices else ('XLAEigen' not in line.name):
        continue
      for event in line.events:
        name = names.get(event.metadata_id, '')
        if name and not _NOT_OPS.match(name):
          yield name, event.duration_ps * 1e-12


def seconds_by_kind(run_step: Callable[[], object], steps: int = 2) -> dict[str, float]:
  """Seconds per step by kind of op over `steps` traced calls of `run_step` (which must block until
  its step is done; compile and warm up before calling this)."""
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        run_step()
    traces = sorted(pathlib.Path(trace_dir).rglob('*.xplane.pb'))
    if not traces:
      raise RuntimeError(f'jax.profiler.trace wrote no *.xplane.pb under {trace_dir}')
    # The trace's protobuf comes with TensorFlow, imported only when a profile is asked for, so
    # that the bench runs where TensorFlow is absent (the GPU machine).
    # pylint: disable-next=g-direct-tensorflow-import,g-import-not-at-top
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    space.ParseFromString(traces[-1].read_bytes())
  seconds = collections.Counter()
  for name, duration in _op_events(space):
    seconds[kind_of(name)] += duration / steps
  return dict(seconds.most_common())

"""logs.py: library chatter hidden unless --verbosity asks, summaries not logged a second time, and
steps/s and the ETA without the compilation of each step."""
import logging as python_logging
import os

from absl import logging
import numpy as np
import pytest

from vivit_cofinetune import logs

PACKAGE_FILE = os.path.join(os.path.dirname(logs.__file__), 'train.py')
TFDS_FILE = '/site-packages/tensorflow_datasets/core/dataset_info.py'


def record(pathname: str, level: int, message: str) -> python_logging.LogRecord:
  return python_logging.LogRecord('absl', level, pathname, 1, message, (), None)


@pytest.fixture
def verbosity():
  before = logging.get_verbosity()
  yield logging.set_verbosity
  logging.set_verbosity(before)


class Lines(python_logging.Handler):
  """The messages absl's logger emits, in order."""

  def __init__(self):
    super().__init__(python_logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())

  @property
  def text(self) -> str:
    return '\n'.join(self.messages)


@pytest.fixture
def absl_lines():
  lines, logger = Lines(), logging.get_absl_logger()
  level = logger.level
  logger.addHandler(lines)
  logger.setLevel(python_logging.INFO)
  yield lines
  logger.removeHandler(lines)
  logger.setLevel(level)


def test_library_info_is_hidden_unless_verbosity_asks(verbosity):
  verbosity(logging.INFO)  # --verbosity=0, the default
  assert not logs._is_shown(record(TFDS_FILE, python_logging.INFO, 'Load dataset info from /x'))
  assert logs._is_shown(record(PACKAGE_FILE, python_logging.INFO, 'step 2/8 | ...'))
  assert logs._is_shown(record(TFDS_FILE, python_logging.WARNING, 'Variant folder has no info'))
  assert not logs._is_shown(record(TFDS_FILE, python_logging.WARNING,
                                   '`FeatureConnector.dtype` is deprecated'))
  verbosity(logging.DEBUG)  # --verbosity=1
  assert logs._is_shown(record(TFDS_FILE, python_logging.INFO, 'Load dataset info from /x'))


def test_the_writer_writes_summaries_without_logging_them_again(tmp_path, absl_lines):
  writer = logs.make_writer(tmp_path)
  writer.write_scalars(3, {'train/task/loss': 1.25})
  writer.flush()
  logging.info('a line to show the capture works')
  assert absl_lines.messages == ['a line to show the capture works']
  assert list(tmp_path.glob('events.out.tfevents.*'))


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self) -> float:
    return self.now


def test_steps_per_second_and_eta_leave_out_each_steps_first_call(monkeypatch, absl_lines):
  clock = FakeClock()
  monkeypatch.setattr(logs.time, 'monotonic', clock)
  progress = logs.Progress(total_steps=10)
  metrics = {'task': {'loss': np.float32(0.5)}}
  # Step 1 compiles (100 s); steps 2-4 take 2 s each: 3 timed steps in 6 s.
  for seconds, first_call in ((100, True), (2, False), (2, False), (2, False)):
    with progress.timed(first_call=first_call):
      clock.now += seconds
    progress.step_done(metrics, clips=16)
  scalars = progress.report(4)
  assert scalars['steps_per_sec'] == pytest.approx(3 / 6)
  assert scalars['clips_per_sec'] == pytest.approx(3 * 16 / 6)
  # 6 steps left at 0.5 steps/s: 12 s.
  assert 'step 4/10 | 0.50 steps/s | 8.0 clips/s | ETA 00:00:12 | loss task=0.500' in absl_lines.text
  assert absl_lines.text.count('step 4/10') == 1


def test_a_window_of_first_calls_only_reports_no_rate(monkeypatch, absl_lines):
  clock = FakeClock()
  monkeypatch.setattr(logs.time, 'monotonic', clock)
  progress = logs.Progress(total_steps=10)
  with progress.timed(first_call=True):
    clock.now += 50
  progress.step_done({'task': {'loss': np.float32(0.5)}}, clips=16)
  scalars = progress.report(1)
  assert 'steps_per_sec' not in scalars and 'step 1/10 | compiled | loss task=0.500' in absl_lines.text

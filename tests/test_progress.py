"""The training loop's progress window: averaged metrics, rates, and the non-finite-loss guard."""
import math

import numpy as np
import pytest

from vivit_cofinetune import logs


def test_report_averages_each_tasks_metrics_over_the_window():
  progress = logs.Progress(total_steps=10)
  progress.step_done({'a': {'loss': np.float32(1.0)}}, clips=4)
  progress.step_done({'a': {'loss': np.float32(3.0)}, 'b': {'loss': np.float32(0.5)}}, clips=8)
  scalars = progress.report(2)
  assert scalars['train/a/loss'] == pytest.approx(2.0)
  assert scalars['train/b/loss'] == pytest.approx(0.5)
  assert scalars['clips_per_sec'] > 0 and scalars['steps_per_sec'] > 0
  # The window starts again after a report.
  progress.step_done({'a': {'loss': np.float32(5.0)}}, clips=4)
  assert progress.report(3)['train/a/loss'] == pytest.approx(5.0)


@pytest.mark.parametrize('bad_loss', [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_report_naming_the_task_and_step(bad_loss):
  progress = logs.Progress(total_steps=10)
  progress.step_done({'a': {'loss': np.float32(1.0)}, 'b': {'loss': np.float32(bad_loss)}}, clips=8)
  with pytest.raises(FloatingPointError, match=r'task b: training loss is (nan|inf) at step 7'):
    progress.report(7)


def test_the_guard_also_runs_between_reports_before_a_checkpoint():
  progress = logs.Progress(total_steps=10)
  progress.step_done({'a': {'loss': np.float32(math.nan)}}, clips=4)
  with pytest.raises(FloatingPointError, match='task a'):
    progress.check_finite(3)

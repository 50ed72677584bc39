"""The paper config's local mode trains and evaluates on fake AVA v2.2 + Kinetics-700 releases."""
import json
import os
import subprocess
import sys

import pytest

import fake_releases
from vivit_cofinetune.data import prepare
from vivit_cofinetune.metrics import ava

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_local_mode_trains_and_its_ava_map_equals_the_cli_on_its_csv(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  ava_release = fake_releases.write_ava_release(str(tmp_path / 'ava'), layout='videos_15min')
  kinetics_release = fake_releases.write_kinetics_release(str(tmp_path / 'kinetics'))
  prepare.main(['ava_v2_2', '--manual_dir', ava_release['root'], '--data_dir', data_dir])
  prepare.main(['kinetics700', '--manual_dir', kinetics_release['root'], '--data_dir', data_dir])
  workdir = tmp_path / 'workdir'
  num_classes = len(kinetics_release['class_names'])
  command = [sys.executable, '-m', 'vivit_cofinetune.main',
             '--config=configs/ava_kinetics_cofinetune.py:local=True', f'--workdir={workdir}',
             f'--config.data_dir={data_dir}',
             f'--config.tasks.kinetics700.num_classes={num_classes}']
  run = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((workdir / 'eval_results.json').read_text())
  assert set(results) == {'ava', 'kinetics700'}
  # Scored against the release's own val CSV and exclusions: the CLI on the written CSV agrees.
  annotations = os.path.join(ava_release['root'], 'annotations')
  detections = workdir / 'eval' / 'step_20' / 'ava_detections.csv'
  cli = ava.main(['--groundtruth', os.path.join(annotations, 'ava_val_v2.2.csv'),
                  '--detections', str(detections),
                  '--labelmap', os.path.join(annotations,
                                             'ava_action_list_v2.2_for_activitynet_2019.pbtxt'),
                  '--exclusions', os.path.join(annotations, 'ava_val_excluded_timestamps_v2.2.csv')])
  assert abs(cli['mAP'] - results['ava']['mAP']) <= 1e-6
  # Every detection above the 0.8 threshold of every val keyframe is scored, for all 80 classes.
  keyframes = {(e['video_id'], e['timestamp']) for e in ava_release['examples']['val']
               if not e['excluded']}
  confident = [d for d in ava_release['detections']['val']
               if d['score'] >= 0.8 and (d['video_id'], d['timestamp']) in keyframes]
  assert len(detections.read_text().splitlines()) == 80 * len(confident)

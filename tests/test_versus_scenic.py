"""bench/versus_scenic.py at a tiny size: the same model on both sides, and the JSON it prints."""
import json
import sys

import pytest

from bench import versus_scenic

pytestmark = pytest.mark.slow  # compiles three models


def test_tiny_side_by_side_prints_rates_of_the_same_model(monkeypatch, capsys):
  monkeypatch.setattr(sys, 'argv', ['versus_scenic.py', '--model=Ti/16x2', '--frames=2',
                                    '--resolution=32', '--batch_size=2', '--num_layers=2', '--rounds=1',
                                    '--json'])
  versus_scenic.main()
  result = json.loads(capsys.readouterr().out)
  # Tubelets, CLS token, positions, 2 blocks, final norm and the 700-class head on both sides.
  hidden, mlp, tokens = 192, 768, 1 * 2 * 2 + 1
  per_block = 2 * 2 * hidden + 4 * (hidden * hidden + hidden) + 2 * hidden * mlp + mlp + hidden
  expected = (2 * 16 * 16 * 3 * hidden + hidden + hidden + tokens * hidden + 2 * per_block
              + 2 * hidden + hidden * 700 + 700)
  assert result['params'] == {'ours': expected, 'scenic_style': expected}
  assert set(result['step_s_median']) == {'ours_scanned', 'ours_unrolled', 'scenic_style'}
  assert set(result['versus_scenic']) == {'ours_scanned', 'ours_unrolled'}
  assert all(value > 0 for value in result['mfu'].values())

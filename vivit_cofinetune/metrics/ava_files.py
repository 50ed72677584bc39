"""AVA's annotation files: ground-truth and detection CSVs, label maps, excluded timestamps.

The formats are those of the official release and of ActivityNet's evaluator:
- CSV rows `video_id,timestamp,x1,y1,x2,y2,action_id[,person_id or score]`, no header, coordinates in
  [0, 1] of the frame, the timestamp a whole second;
- label maps `item { name: "..." id: N }` (or `label { name: "..." label_id: N }`) in pbtxt;
- excluded timestamps `video_id,timestamp`.
Rows are held as numpy columns (`Annotations`) that metrics/ava.py evaluates. Errors name the file and
the 1-based line.
"""
import csv
import dataclasses
import io
import re
from typing import Iterable, Sequence

from absl import logging
from etils import epath
import numpy as np

_COMMA, _NEWLINE, _CARRIAGE_RETURN, _ZERO = 44, 10, 13, 48


@dataclasses.dataclass
class Annotations:
  """AVA rows as numpy columns, in file order (one row per box and action).

  video_names: str [V] distinct ids; video_index: int64 [N] into video_names
  (`video_id` gives the per-row strings); timestamp: int64 [N] keyframe second;
  boxes: float64 [N, 4] as (y1, x1, y2, x2) in [0, 1]; label: int64 [N] action
  id; score: float64 [N] (1.0 for ground truth).
  """
  video_names: np.ndarray
  video_index: np.ndarray
  timestamp: np.ndarray
  boxes: np.ndarray
  label: np.ndarray
  score: np.ndarray

  @property
  def video_id(self) -> np.ndarray:
    return self.video_names[self.video_index]

  def __len__(self) -> int:
    return len(self.label)

  def select(self, rows: np.ndarray) -> 'Annotations':
    """Returns the rows picked by a boolean mask or an index array."""
    return Annotations(self.video_names, self.video_index[rows],
                       self.timestamp[rows], self.boxes[rows], self.label[rows],
                       self.score[rows])


def annotations_from_arrays(video_ids: Sequence[str] | np.ndarray,
                            timestamps: Sequence[int] | np.ndarray,
                            boxes_y1x1y2x2: np.ndarray,
                            labels: Sequence[int] | np.ndarray,
                            scores: Sequence[float] | np.ndarray | None = None
                           ) -> Annotations:
  """Builds Annotations from in-memory rows (N of each; boxes [N, 4])."""
  video_names, video_index = _video_codes(
      np.asarray(video_ids, dtype=str).reshape(-1))
  timestamp = np.asarray(timestamps).reshape(-1)
  if timestamp.size and not np.array_equal(timestamp, np.round(timestamp)):
    raise ValueError('timestamps must be whole seconds.')
  boxes = np.asarray(boxes_y1x1y2x2, dtype=np.float64).reshape(-1, 4)
  label = np.asarray(labels).reshape(-1).astype(np.int64)
  score = (np.ones(len(label)) if scores is None else
           np.asarray(scores, dtype=np.float64).reshape(-1))
  sizes = {len(video_index), len(timestamp), len(boxes), len(label), len(score)}
  if len(sizes) != 1:
    raise ValueError('video_ids, timestamps, boxes, labels and scores must have '
                     f'the same length, got {sorted(sizes)}.')
  if not np.all(np.isfinite(score)):
    raise ValueError('scores must be finite.')
  return Annotations(video_names, video_index, timestamp.astype(np.int64), boxes,
                     label, score)


# ---------------------------------------------------------------- reading ---


def read_labelmap(path: str) -> tuple[dict[int, str], set[int]]:
  """Reads a label map: pbtxt (`item {name, id}` or `label {name, label_id}`) or `id,name` CSV."""
  try:
    text = epath.Path(path).read_text()
  except OSError as error:
    raise OSError(f'{path}: cannot read label map ({error}).') from error
  if str(path).endswith('.csv'):
    entries = _labelmap_csv_entries(path, text)
  else:
    entries = _labelmap_pbtxt_entries(path, text)
  labelmap, line_of = {}, {}
  for line_number, class_id, name in entries:
    if class_id in labelmap:
      raise ValueError(f'{path}:{line_number}: id {class_id} ({name!r}) is already the id of '
                       f'{labelmap[class_id]!r} (line {line_of[class_id]}); ids must be unique.')
    labelmap[class_id], line_of[class_id] = name, line_number
  if not labelmap:
    raise ValueError(f'{path}: no `name`/`id` entries found.')
  return labelmap, set(labelmap)


def _labelmap_pbtxt_entries(path, text) -> list[tuple[int, int, str]]:
  """(line, id, name) of each `name:` field followed by an `id:` (or `label_id:`) field; fields may
  share a line (`item { name: "walk" id: 1 }`)."""
  entries, name = [], None
  for match in re.finditer(r'\b(name|id|label_id)\s*:\s*("[^"\n]*"|[^\s}]*)', text):
    field, value = match.groups()
    line_number = text.count('\n', 0, match.start()) + 1
    if field == 'name':
      name = value.strip('"')
    elif name is None or not value.isdigit():
      raise ValueError(f'{path}:{line_number}: expected `{field}: <int>` after a `name:` field, '
                       f'got `{field}: {value}`.')
    else:
      entries.append((line_number, int(value), name))
      name = None
  return entries


def _labelmap_csv_entries(path, text) -> list[tuple[int, int, str]]:
  """(line, id, name) of `id,name` rows; a first row `id,name` is a header."""
  entries = []
  for line_number, row in enumerate(csv.reader(io.StringIO(text, newline='')), start=1):
    if not row or (line_number == 1 and [cell.strip() for cell in row] == ['id', 'name']):
      continue
    if len(row) != 2 or not row[0].strip().isdigit() or not row[1].strip():
      raise ValueError(f'{path}:{line_number}: expected `id,name` with a whole-number id, got '
                       f'{row!r}.')
    entries.append((line_number, int(row[0]), row[1].strip()))
  return entries


def read_exclusions(path: str | None) -> set[tuple[str, int]]:
  """Reads `video_id,timestamp` rows of keyframes to leave out."""
  if not path:
    return set()
  try:
    rows = list(csv.reader(io.StringIO(epath.Path(path).read_text(), newline='')))
  except OSError as error:
    raise OSError(f'{path}: cannot read exclusions ({error}).') from error
  excluded = set()
  for line_number, row in enumerate(rows, start=1):
    if len(row) != 2 or not row[1].strip().isdigit():
      raise ValueError(f'{path}:{line_number}: expected `video_id,timestamp`, '
                       f'got {row!r}.')
    excluded.add((row[0], int(row[1])))
  return excluded


def read_csv(path: str, class_whitelist: Iterable[int] | None = None,
             load_scores: bool = False) -> Annotations:
  """Reads an AVA CSV: `video_id,timestamp,x1,y1,x2,y2,action_id[,score]`.

  Vectorised: splits the bytes at commas and newlines and parses each numeric
  column with numpy byte arithmetic (see `_parse_column`). The 8th column is a
  score when `load_scores`, else a person id, which is not needed and not
  parsed (so a malformed one is harmless). Rows of classes outside
  `class_whitelist` (when given) are dropped with a logged count. Errors name
  the file and the 1-based line.
  """
  try:
    # epath reads local files and buckets (gs://) alike.
    data = np.frombuffer(epath.Path(path).read_bytes(), dtype=np.uint8)
  except OSError as error:
    raise OSError(f'{path}: cannot read AVA CSV ({error}).') from error
  if np.any(data == _CARRIAGE_RETURN):
    data = data[data != _CARRIAGE_RETURN]
  if data.size and data[-1] != _NEWLINE:
    data = np.concatenate([data, [_NEWLINE]]).astype(np.uint8)
  if not data.size:
    return annotations_from_arrays([], [], np.zeros((0, 4)), [])

  separators = np.flatnonzero((data == _COMMA) | (data == _NEWLINE))
  field_start = np.concatenate([[0], separators[:-1] + 1])
  field_end = separators
  field_length = field_end - field_start
  line_last_field = np.flatnonzero(data[separators] == _NEWLINE)
  columns = np.diff(line_last_field, prepend=-1)
  bad = np.flatnonzero((columns != 7) & (columns != 8))
  if bad.size:
    raise ValueError(f'{path}:{bad[0] + 1}: expected 7 or 8 comma-separated '
                     f'columns, found {columns[bad[0]]}.')
  first_field = line_last_field - columns + 1
  id_start, id_end = field_start[first_field], field_end[first_field]
  empty = np.flatnonzero(id_end == id_start)
  if empty.size:
    raise ValueError(f'{path}:{empty[0] + 1}: empty video id.')

  uniform = columns.min() == columns.max()

  def column(index: int, lines: np.ndarray | None = None) -> np.ndarray:
    if uniform and lines is None:  # Strided views, no gather.
      starts = field_start[index::columns[0]]
      lengths = field_length[index::columns[0]]
    else:
      fields = first_field + index if lines is None else first_field[lines] + index
      starts, lengths = field_start[fields], field_length[fields]
    line_numbers = (lambda: np.arange(1, len(columns) + 1) if lines is None else
                    np.flatnonzero(lines) + 1)
    return _parse_column(data, starts, lengths, path, line_numbers, index)

  timestamp, action = column(1), column(6)
  x1, y1, x2, y2 = (column(index) for index in range(2, 6))
  boxes = np.stack([y1, x1, y2, x2], axis=1)
  for name, values in (('timestamp', timestamp), ('action_id', action)):
    bad = np.flatnonzero(values != np.round(values))
    if bad.size:
      raise ValueError(f'{path}:{bad[0] + 1}: {name} must be an integer, got '
                       f'{values[bad[0]]}.')
  bad = np.flatnonzero(~np.all((boxes >= 0) & (boxes <= 1), axis=1))
  if bad.size:
    raise ValueError(f'{path}:{bad[0] + 1}: box coordinates must lie in [0, 1], '
                     f'got x1,y1,x2,y2 = {x1[bad[0]]},{y1[bad[0]]},'
                     f'{x2[bad[0]]},{y2[bad[0]]}.')
  score = np.ones(len(columns))
  if load_scores:
    has_score = columns == 8
    score[has_score] = column(7, has_score)
    bad = np.flatnonzero(~np.isfinite(score))
    if bad.size:
      raise ValueError(f'{path}:{bad[0] + 1}: score must be a finite number.')

  video_names, video_index = _video_names_and_index(data, id_start, id_end)
  annotations = Annotations(video_names, video_index,
                            timestamp.astype(np.int64), boxes,
                            action.astype(np.int64), score)
  if class_whitelist is not None:
    annotations = keep_classes(annotations, class_whitelist, path)
  return annotations


def _parse_column(data, starts, lengths, path, line_numbers, index) -> np.ndarray:
  """Parses the byte ranges data[starts : starts + lengths] as float64.

  Vectorised over fields of equal length: plain decimals (digits and at most
  one '.', <= 15 digits) become integer mantissa / 10**decimals, which IEEE
  division rounds exactly as Python's float() does; anything else (signs,
  exponents, spaces) falls back to float() per field. Failures name the line
  (`line_numbers()` gives the file line of each field).
  """
  values = np.zeros(len(starts))
  plain = np.zeros(len(starts), bool)
  if not len(starts):
    return values
  same_length = np.all(lengths == lengths[0])
  distinct = lengths[:1] if same_length else np.unique(lengths)
  for length in distinct[(distinct > 0) & (distinct <= 16)]:
    rows = slice(None) if same_length else np.flatnonzero(lengths == length)
    values[rows], plain[rows] = _parse_plain_decimals(data, starts[rows], length)
  for field in np.flatnonzero(~plain):
    text = data[starts[field]:starts[field] + lengths[field]].tobytes().decode(
        'utf-8', 'replace')
    try:
      values[field] = float(text)
    except ValueError:
      line_number = line_numbers()[field]
      hint = (' If it is a header line, remove it: AVA CSVs have none.' if line_number == 1
              else '')
      raise ValueError(f'{path}:{line_number}: column {index + 1} is not a number: '
                       f'{text!r}.{hint}') from None
  return values


def _parse_plain_decimals(data, starts, length):
  """(values, ok) of fields data[starts : starts + length] of one length."""
  # Each offset is read through a shifted view, so no index arrays are built.
  characters = [data[offset:][starts] for offset in range(length)]
  dots = [character == ord('.') for character in characters]
  has_dot = [dot.any() for dot in dots]
  if all(dot.all() for dot, any_dot in zip(dots, has_dot) if any_dot):
    dot_at = [offset for offset, any_dot in enumerate(has_dot) if any_dot]
    mantissa = np.zeros(len(starts), np.int64)
    ok = np.ones(len(starts), bool)
    for offset, character in enumerate(characters):
      if offset not in dot_at:
        digit = character - np.uint8(ord('0'))  # Wraps below '0', so <= 9 checks.
        ok &= digit <= 9
        mantissa = mantissa * 10 + digit
    decimals = length - 1 - dot_at[0] if dot_at else 0
    ok &= (len(dot_at) <= 1) & (length - len(dot_at) <= 15)
    return mantissa / 10.0**decimals, ok
  mantissa = np.zeros(len(starts), np.int64)
  decimals = np.zeros(len(starts), np.int64)
  seen_dot = np.zeros(len(starts), bool)
  ok = np.ones(len(starts), bool)
  dot_count = np.zeros(len(starts), np.int64)
  for character, dot in zip(characters, dots):
    dot_count += dot
    digit = character - np.uint8(ord('0'))
    is_digit = digit <= 9
    ok &= is_digit | dot
    mantissa = np.where(is_digit, mantissa * 10 + digit, mantissa)
    decimals += seen_dot & is_digit
    seen_dot |= dot
  ok &= (dot_count <= 1) & (length - dot_count <= 15) & (length - dot_count > 0)
  return mantissa / 10.0**decimals, ok


def _video_names_and_index(data, starts, ends):
  """Distinct ids (str [V]) and each row's index into them, from byte ranges."""
  lengths = ends - starts
  width = int(lengths.max())
  characters = np.zeros((len(starts), width), dtype=np.uint8)
  same_length = np.all(lengths == width)
  for offset in range(width):
    if same_length:
      characters[:, offset] = data[offset:][starts]
    else:
      present = np.flatnonzero(lengths > offset)
      characters[present, offset] = data[starts[present] + offset]
  names, index = _video_codes(characters.view(f'S{width}').reshape(-1))
  return np.array([name.decode('utf-8') for name in names.tolist()]), index


def keep_classes(annotations, class_whitelist, source) -> Annotations:
  keep = np.isin(annotations.label, np.fromiter(class_whitelist, np.int64))
  dropped = len(annotations) - int(keep.sum())
  if dropped:
    classes = np.unique(annotations.label[~keep])
    logging.warning('%s: ignored %d rows of %d class ids not in the label map '
                    '(e.g. %s), as the official evaluator does.', source,
                    dropped, len(classes), classes[:10].tolist())
  return annotations.select(keep)


def _video_codes(video_ids):
  """Codes of string ids; cheap when equal ids come in runs, as in AVA files."""
  if not video_ids.size:
    return np.zeros(0, dtype=str), np.zeros(0, np.int64)
  run_starts = np.flatnonzero(np.concatenate(
      [[True], video_ids[1:] != video_ids[:-1]]))
  names, run_codes = np.unique(video_ids[run_starts], return_inverse=True)
  run_lengths = np.diff(np.append(run_starts, video_ids.size))
  return names, np.repeat(run_codes.astype(np.int64), run_lengths)


# ---------------------------------------------------------------- writing ---


def write_labelmap(path: str, labelmap: dict[int, str]) -> None:
  """Writes a label map as the release's pbtxt: one `item { name: "..." id: N }` per class."""
  for class_id, name in labelmap.items():
    if '"' in name or '\n' in name:
      raise ValueError(f'class {class_id}: name {name!r} holds a quote or a newline, which a '
                       'pbtxt label map cannot hold.')
  epath.Path(path).write_text(''.join(
      f'item {{\n  name: "{labelmap[class_id]}"\n  id: {class_id}\n}}\n'
      for class_id in sorted(labelmap)))


def write_csv(path: str, annotations: Annotations, box_decimals: int = 3,
              score_decimals: int = 4) -> None:
  """Writes the official detections format.

  Rows are `video_id,timestamp,x1,y1,x2,y2,action_id,score` with a 4-digit
  timestamp; values are rounded half-to-even at the given decimals.
  """
  rows = len(annotations)
  comma = np.full((rows, 1), _COMMA, np.uint8)
  names = np.char.encode(annotations.video_names.astype(str), 'utf-8')
  names = names.astype(f'S{max(1, names.dtype.itemsize)}')
  video = names.view(np.uint8).reshape(len(names), -1)[annotations.video_index]
  pieces = [video, comma,
            _fixed_point(annotations.timestamp, 0, min_digits=4), comma]
  y1, x1, y2, x2 = annotations.boxes.T
  for coordinate in (x1, y1, x2, y2):
    pieces += [_fixed_point(coordinate, box_decimals), comma]
  pieces += [_fixed_point(annotations.label, 0), comma,
             _fixed_point(annotations.score, score_decimals),
             np.full((rows, 1), _NEWLINE, np.uint8)]
  characters = np.concatenate(pieces, axis=1).reshape(-1)
  # epath writes local files and buckets (gs://) alike.
  epath.Path(path).write_bytes(characters[characters != 0].tobytes())


def _fixed_point(values, decimals: int, min_digits: int = 1) -> np.ndarray:
  """Formats numbers as ASCII [N, width] (zero bytes pad, dropped on write)."""
  values = np.asarray(values, dtype=np.float64)
  scaled = np.rint(np.abs(values) * 10**decimals).astype(np.int64)
  whole, fraction = np.divmod(scaled, 10**decimals)
  digit_count = np.maximum(min_digits, 1 + sum(
      (whole >= 10**power).astype(int) for power in range(1, 19)))
  width = int(digit_count.max()) if len(values) else min_digits
  out = np.zeros((len(values), 1 + width + (decimals + 1 if decimals else 0)),
                 np.uint8)
  for position in range(width):  # Right-aligned digits of the whole part.
    power = width - 1 - position
    out[:, 1 + position] = np.where(
        digit_count > power, _ZERO + (whole // 10**power) % 10, 0)
  negative = (values < 0) & (scaled > 0)
  out[negative, width - digit_count[negative]] = ord('-')
  if decimals:
    out[:, 1 + width] = ord('.')
    for position in range(decimals):
      out[:, 2 + width + position] = _ZERO + (
          fraction // 10**(decimals - 1 - position)) % 10
  return out

"""The study's charts, as matplotlib figures the driver saves: the table as grouped bars, and every
metric over training."""
from collections.abc import Mapping, Sequence

from matplotlib import figure


def bar_chart(summary: Mapping[str, Mapping[str, Mapping]], titles: Sequence[str], *,
              title: str = '') -> figure.Figure:
  """One group of bars per column title, one bar per schedule: the mean, whiskers ± the std.

  summary: schedule -> column title -> {'mean', 'std'} (study.summarise); a mean of None (a task
  the schedule does not train) draws no bar.
  """
  schedules = list(summary)
  fig = figure.Figure(figsize=(2.0 + 1.4 * len(titles), 4.5), layout='constrained')
  axes = fig.add_subplot()
  width = 0.8 / len(schedules)
  for row, schedule in enumerate(schedules):
    positions, means, errors = [], [], []
    for column, column_title in enumerate(titles):
      value = summary[schedule][column_title]
      if value['mean'] is not None:
        positions.append(column - 0.4 + (row + 0.5) * width)
        means.append(value['mean'])
        errors.append(value['std'])
    axes.bar(positions, means, width, yerr=errors, capsize=2, label=schedule,
             color=f'C{row % 10}', hatch='//' if row >= 10 else None)
  axes.set_xticks(range(len(titles)), titles)
  axes.set_ylim(0, 1)
  axes.grid(axis='y', alpha=0.3)
  axes.set_title(title)
  axes.legend(fontsize='small', ncols=2)
  return fig


def curves_chart(curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
                 panels: Sequence[tuple[str, str]]) -> figure.Figure:
  """One panel per (tag, panel title), one line per schedule: its [[step, value], ...] points.

  curves: schedule -> tag -> points (study.mean_curves); a schedule without the tag has no line.
  """
  columns = 3
  rows = -(-len(panels) // columns)
  fig = figure.Figure(figsize=(4.2 * columns, 3.0 * rows), layout='constrained')
  for index, (tag, panel_title) in enumerate(panels):
    axes = fig.add_subplot(rows, columns, index + 1)
    for row, (schedule, by_tag) in enumerate(curves.items()):
      if by_tag.get(tag):
        steps, values = zip(*by_tag[tag])
        axes.plot(steps, values, marker='.', color=f'C{row % 10}',
                  linestyle='--' if row >= 10 else '-', label=schedule)
    axes.set_title(panel_title)
    axes.set_xlabel('step')
    axes.grid(alpha=0.3)
  # One legend for the figure: a schedule may have lines in some panels only.
  handles = {}
  for axes in fig.axes:
    for line in axes.get_lines():
      handles.setdefault(line.get_label(), line)
  fig.legend(list(handles.values()), list(handles), loc='outside lower center',
             ncols=min(len(handles), 5), fontsize='small')
  return fig

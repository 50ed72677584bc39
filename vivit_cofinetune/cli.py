"""What the command-line tools share: flag parsing whose every mistake is one line."""
import re
import sys

from absl import flags

from vivit_cofinetune import config_lib


def parse_flags(argv: list[str], *, config_flag: flags.FlagHolder | None = None,
                flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=...)`), with every mistake in a flag or in
  the config file of `config_flag` (`:stpes=10`, `--config.optimizr.name=x`, a missing file) one
  line on stderr and exit status 1, instead of a traceback."""
  try:
    remaining = flag_values(argv)
    if config_flag is not None and config_flag.value is not None:
      config_flag.value.get('tasks')  # a config file that failed to load raises on first use
  except (flags.Error, KeyError, AttributeError, OSError, ValueError, TypeError) as error:
    sys.exit(flag_error_line(error, argv))
  return remaining


def flag_error_line(error: BaseException, argv: list[str]) -> str:
  """The one line that says which flag or config argument is wrong, and how."""
  config_error = find_in_chain(error, lambda e: isinstance(e, config_lib.ConfigError)
                                and not str(e).startswith('Error whilst parsing'))
  if config_error is not None:
    return f'Config error: {config_error}'
  missing = find_in_chain(error, lambda e: isinstance(e, (KeyError, AttributeError)))
  if missing is not None:
    # An override of a field the config does not have: the innermost error holds the field's name,
    # an outer one ml_collections' suggestion.
    field = str(missing.args[0] if missing.args else missing)
    suggestion = re.search(r'Did you mean "[^"]+" instead of "[^"]+"\?', str(error))
    overrides = [arg.partition('=')[0] for arg in argv[1:]
                 if arg.startswith('--config.') and field in arg.partition('=')[0].split('.')]
    return (f'Config error: {overrides[0] if overrides else "--config"}: the config has no field '
            f'{field!r}' + (f'; {suggestion.group(0)}' if suggestion else ''))
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if isinstance(error, OSError) and lines:
    return f'Config error: --config: {lines[-1]}'  # the file system's reason comes last
  return f'Flag error: {lines[0] if lines else type(error).__name__}'


def find_in_chain(error: BaseException | None, matches) -> BaseException | None:
  """The innermost exception of error's cause/context chain that `matches`, or None."""
  found = None
  while error is not None:
    if matches(error):
      found = error
    error = error.__cause__ or error.__context__
  return found

"""Progress bars for a person watching a terminal; nothing anywhere else.

  with progress.Bar(total, "step", "Meta-training") as bar:
    for done in range(1, total + 1):
      ...
      bar.update(done, psnr=psnr)

draws one line on stderr, redrawn in place: the label, a bar, done/total, the rate,
the ETA and the latest values. Where stderr is not a terminal (a log file, CI, a
pipe, a test capturing it) a Bar writes nothing, and the caller's own log lines are
the record. A log record written while a bar is shown erases it first, so the record
starts at the left margin; the next update draws the bar below it.

keras.utils.Progbar was the first choice, but it writes to stdout (where the binaries
print their results), counts its rate from step 0 (a resumed run's ETA would be far
too short), shows numbers only and wraps on a narrow terminal.
"""

import logging
import os
import sys
import time

# Characters of the bar itself; narrower where the line would not fit.
_BAR_WIDTH, _MIN_BAR_WIDTH = 20, 8
# Redraws at most this often (a fast loop would spend its time drawing).
_REDRAW_SECONDS = 0.1
_ERASE_LINE = "\r\x1b[K"


def is_terminal(stream):
  isatty = getattr(stream, "isatty", None)
  return bool(isatty and isatty())


class Bar:
  """A progress bar of `total` units, starting at `start` (a resumed run's step)."""

  def __init__(self, total, unit="step", label="", start=0, stream=None):
    self.stream = sys.stderr if stream is None else stream
    self.active = is_terminal(self.stream)
    self.total, self.unit, self.label, self._start = total, unit, label, start
    # (done, time) at the first update past `start`: the rate leaves out the first
    # unit, which also traces and compiles.
    self._first = None
    self._drawn_at = -float("inf")
    self._shown = False
    self._log_filter = _EraseBeforeLogs(self)
    if self.active:
      _add_to_log_handlers(self._log_filter)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def update(self, done, **values):
    """`done` units of `total`, then `values` as 'name value' (a float with 2 decimals;
    names that are no identifiers go in as **{"held-out psnr": 17.2})."""
    if not self.active:
      return
    now = time.monotonic()
    if self._first is None and done > self._start:
      self._first = (done, now)
    if now - self._drawn_at < _REDRAW_SECONDS and done < self.total:
      return
    self._drawn_at = now
    self.stream.write(_ERASE_LINE + self._line(done, now, values,
                                               _columns(self.stream)))
    self.stream.flush()
    self._shown = True

  def clear(self):
    """Erases the bar (before other output to the same terminal)."""
    if self._shown:
      self.stream.write(_ERASE_LINE)
      self.stream.flush()
      self._shown = False

  def close(self):
    """Erases the bar: the caller's log lines say what was done."""
    self.clear()
    _remove_from_log_handlers(self._log_filter)

  def _line(self, done, now, values, columns):
    """The bar's line, its bar narrowed and then its end cut to fit `columns` (a
    wrapped line could not be redrawn in place)."""
    parts = [f"{done}/{self.total} {self.unit}s"]
    rate = self._rate(done, now)
    if rate:
      parts.append(_rate_text(rate, self.unit))
      parts.append(f"ETA {_duration(max(self.total - done, 0) / rate)}")
    parts += [f"{name} {_value_text(v)}" for name, v in values.items()]
    text = "  ".join(parts)
    label = f"{self.label}  " if self.label else ""
    room = columns - 1 - len(label) - len(text) - len("[]  ")
    width = max(_MIN_BAR_WIDTH, min(_BAR_WIDTH, room))
    filled = int(width * min(done / self.total, 1)) if self.total else width
    line = f"{label}[{'#' * filled}{'.' * (width - filled)}]  {text}"
    return line[:columns - 1]

  def _rate(self, done, now):
    """Units per second since the first unit, or None before that is known."""
    if self._first is None or done <= self._first[0] or now <= self._first[1]:
      return None
    first_done, first_time = self._first
    return (done - first_done) / (now - first_time)


class _EraseBeforeLogs(logging.Filter):
  """A handler filter that only erases the bar; it passes every record."""

  def __init__(self, bar):
    super().__init__()
    self.bar = bar

  def filter(self, record):
    self.bar.clear()
    return True


def _add_to_log_handlers(log_filter):
  # The root logger's handlers see every record, absl's included (it propagates).
  for handler in logging.getLogger().handlers:
    handler.addFilter(log_filter)


def _remove_from_log_handlers(log_filter):
  for handler in logging.getLogger().handlers:
    handler.removeFilter(log_filter)


def _columns(stream):
  try:
    return os.get_terminal_size(stream.fileno()).columns
  except (AttributeError, OSError, ValueError):  # not a real terminal: a test's fake
    return 80


def _rate_text(rate, unit):
  return f"{rate:.2f} {unit}s/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"


def _duration(seconds):
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  if hours:
    return f"{hours}:{minutes:02d}:{seconds:02d}"
  return f"{minutes}:{seconds:02d}"


def _value_text(value):
  return f"{value:.2f}" if isinstance(value, float) else str(value)

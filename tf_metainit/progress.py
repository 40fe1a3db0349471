"""Progress bars for a person watching a terminal; nothing anywhere else.

  with progress.Bar(total, "step", "Meta-training") as bar:
    for done in range(1, total + 1):
      ...
      bar.update(done, psnr=psnr)

draws a tqdm bar on stderr (stdout carries the binaries' results): the label,
done/total, elapsed<ETA, the rate and the latest values. Where the stream is not a
terminal (a log file, CI, a pipe, a test capturing it) a Bar writes nothing: the
caller's log lines are the record. A log record written while a bar is shown gets its
own line, and the bar is drawn again below it.

tqdm replaced this module's hand-written bar: it draws, throttles and fits the
terminal's width itself, and starts a resumed run at its step (initial=).
keras.utils.Progbar writes to stdout, counts its rate from step 0 and shows numbers only.
"""

import logging
import sys

import tqdm


def is_terminal(stream):
  isatty = getattr(stream, "isatty", None)
  return bool(isatty and isatty())


class Bar:
  """A progress bar of `total` units, starting at `start` (a resumed run's step)."""

  def __init__(self, total, unit="step", label="", start=0, stream=None):
    self.stream = sys.stderr if stream is None else stream
    self.active = is_terminal(self.stream)
    self._start = start
    self._tqdm = None
    self._handlers = []  # the root logger's handlers that this bar wrapped
    if self.active:
      # leave=False: closing erases the bar. miniters=0: every update may draw,
      # at most every mininterval seconds. smoothing=0: an average, not an EMA.
      self._tqdm = _Tqdm(total=total, initial=start, unit=unit, desc=label,
                         file=self.stream, leave=False, dynamic_ncols=True,
                         mininterval=0.1, miniters=0, smoothing=0)
      self._handlers = _write_logs_above(self.stream)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def update(self, done, **values):
    """`done` units of `total` (a count, not an increment), then `values` as
    'name=value' (a float with 2 decimals; names that are no identifiers go in as
    **{"held-out psnr": 17.2})."""
    if self._tqdm is None:
      return
    bar = self._tqdm
    if bar.first is None and done > self._start:
      bar.first = (done, bar._time())  # pylint: disable=protected-access
    bar.set_postfix({name: _value_text(v) for name, v in values.items()},
                    refresh=False)
    bar.update(done - bar.n)

  def clear(self):
    """Erases the bar (before other output to the same terminal); the next update
    draws it again."""
    if self._tqdm is not None:
      self._tqdm.clear()

  def close(self):
    """Erases the bar (the caller's log lines say what was done) and gives the log
    handlers back."""
    if self._tqdm is not None:
      _restore(self._handlers)
      self._tqdm.close()
      self._tqdm, self._handlers = None, []


class _Tqdm(tqdm.tqdm):
  """tqdm whose rate counts from the first update past `initial`: that unit also
  traces and compiles, and the units before `initial` were done by an earlier run."""

  monitor_interval = 0  # no monitor thread: it only lowers miniters, which stays 0
  first = None  # (n, time) at the first update past `initial`

  @property
  def format_dict(self):
    d = super().format_dict
    now = self._time()
    if self.first is None or self.n <= self.first[0] or now <= self.first[1]:
      d["initial"] = self.n  # tqdm's fallback rate (n - initial) / elapsed: 0, "?"
    else:
      d["rate"] = (self.n - self.first[0]) / (now - self.first[1])
    return d


class _AboveBar(logging.Handler):
  """Emits through `handler` inside tqdm.external_write_mode: the bars on `stream`
  (or on stdout/stderr both) are erased first and drawn again after the record."""

  def __init__(self, handler, stream):
    super().__init__()
    self.handler, self.stream = handler, stream

  def handle(self, record):
    if record.levelno < self.handler.level:
      return False
    with tqdm.tqdm.external_write_mode(file=self.stream):
      return self.handler.handle(record)


def _write_logs_above(stream):
  """Wraps the root logger's handlers (every record reaches them, absl's included:
  it propagates) in _AboveBar; returns the wrappers for _restore. Not
  tqdm.contrib.logging.logging_redirect_tqdm: it redirects logging.StreamHandlers
  only, and absl's handler is none."""
  root = logging.getLogger()
  wrappers = [_AboveBar(h, stream) for h in root.handlers]
  root.handlers = wrappers
  return wrappers


def _restore(wrappers):
  root = logging.getLogger()
  root.handlers = [h.handler if h in wrappers else h for h in root.handlers]


def _value_text(value):
  return f"{value:.2f}" if isinstance(value, float) else str(value)

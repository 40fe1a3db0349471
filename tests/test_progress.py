"""Progress bars: drawn on a terminal only, never into captured output."""

import io
import logging

import pytest

from tf_metainit import progress


class FakeTerminal(io.StringIO):

  def isatty(self):
    return True


@pytest.fixture
def clock(monkeypatch):
  """progress' time.monotonic, set by the test."""
  now = [100.0]
  monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
  return now


def test_nothing_is_written_where_stderr_is_captured(clock):
  stream = io.StringIO()
  with progress.Bar(10, "step", "Meta-training", stream=stream) as bar:
    for done in range(11):
      clock[0] += 1
      bar.update(done, psnr=12.5)
    bar.clear()
  assert not bar.active
  assert stream.getvalue() == ""


def test_a_terminal_shows_total_rate_eta_and_values(clock, monkeypatch):
  monkeypatch.setattr(progress, "_columns", lambda stream: 120)
  stream = FakeTerminal()
  with progress.Bar(10, "step", "Meta-training", stream=stream) as bar:
    bar.update(0)
    clock[0] += 30  # the first step traces: the rate leaves it out
    bar.update(1, psnr=11.0)
    clock[0] += 2
    bar.update(5, **{"held-out psnr": 17.257, "inner": "12.30 -> 12.70"})
    last = stream.getvalue().split("\r\x1b[K")[-1]
  assert last == ("Meta-training  [##########..........]  5/10 steps  2.00 steps/s  "
                  "ETA 0:02  held-out psnr 17.26  inner 12.30 -> 12.70")
  # Closing erases the bar: the caller's log lines are the record.
  assert stream.getvalue().endswith("\r\x1b[K")


def test_redraws_are_throttled_but_the_last_is_drawn(clock):
  stream = FakeTerminal()
  bar = progress.Bar(3, "signal", stream=stream)
  bar.update(1)
  bar.update(2)  # no time passed
  assert "2/3" not in stream.getvalue()
  bar.update(3)
  assert "3/3 signals" in stream.getvalue()


def test_a_log_record_erases_the_bar_first(clock):
  stream = FakeTerminal()
  handler = logging.StreamHandler(stream)
  logger = logging.getLogger()
  logger.addHandler(handler)
  try:
    with progress.Bar(4, "workload", "Benchmark", stream=stream) as bar:
      bar.update(1)
      logging.warning("a log line")
    logging.warning("after the bar")
  finally:
    logger.removeHandler(handler)
  text = stream.getvalue()
  assert "1/4 workloads\r\x1b[Ka log line\n" in text
  # Closed, the bar no longer touches the handlers.
  assert text.endswith("a log line\nafter the bar\n")


def test_a_narrow_terminal_gets_a_narrower_bar_then_the_line_cut(clock):
  stream = FakeTerminal()  # 80 columns: a fake has no real size
  bar = progress.Bar(1000, "step", "Meta-training", stream=stream)
  bar.update(500, **{"held-out psnr": 17.26, "inner-batch psnr": "12.30 -> 12.70"})
  line = stream.getvalue().split("\r\x1b[K")[-1]
  assert line.startswith("Meta-training  [####....]  500/1000 steps  held-out psnr 17.26")
  assert len(line) == 79


def test_train_shows_held_out_and_inner_batch_psnr():
  from tf_metainit import train  # pylint: disable=g-import-not-at-top
  assert train._bar_values(0.1, 0.01, {}) == {"inner-batch psnr": "10.00 -> 20.00"}
  assert train._bar_values(0.1, 0.01, {"psnr": 17.5}) == {
      "held-out psnr": 17.5, "inner-batch psnr": "10.00 -> 20.00"}

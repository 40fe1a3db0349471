"""Progress bars: drawn on a terminal only, never into captured output."""

import io
import logging
import os
import sys

from absl import logging as absl_logging
import pytest
import tqdm.std

from tf_metainit import progress


class FakeTerminal(io.StringIO):

  def isatty(self):
    return True


def screen(text):
  """The lines a terminal shows after `text`: '\r' returns to the line's start and
  what follows overwrites it (a model of the terminal, independent of tqdm)."""
  lines = []
  for raw in text.split("\n"):
    line = ""
    for part in raw.split("\r"):
      line = part + line[len(part):]
    lines.append(line.rstrip())
  return lines


@pytest.fixture
def clock(monkeypatch):
  """The time tqdm reads (bound when a bar is made), set by the test."""
  now = [100.0]
  monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
  return now


@pytest.fixture
def root_handler():
  """A handler on the root logger, removed afterwards; set its stream."""
  handler = logging.StreamHandler(io.StringIO())
  logging.getLogger().addHandler(handler)
  yield handler
  logging.getLogger().removeHandler(handler)


def test_nothing_is_written_to_a_stream_that_is_no_terminal(clock, root_handler):
  stream = io.StringIO()
  root_handler.setStream(stream)
  handlers = list(logging.getLogger().handlers)
  with progress.Bar(10, "step", "Meta-training", stream=stream) as bar:
    assert logging.getLogger().handlers == handlers  # left alone
    for done in range(11):
      clock[0] += 1
      bar.update(done, psnr=12.5)
    bar.clear()
  assert not bar.active
  assert stream.getvalue() == ""


def test_a_terminal_shows_label_done_total_rate_and_values(clock):
  stream = FakeTerminal()
  with progress.Bar(10, "step", "Meta-training", stream=stream) as bar:
    assert bar.active
    bar.update(0)
    clock[0] += 30  # the first step traces: the rate leaves it out
    bar.update(1, psnr=11.0)
    clock[0] += 2
    bar.update(5, **{"held-out psnr": 17.257, "inner": "12.30 -> 12.70"})
    line = screen(stream.getvalue())[-1]
  assert line.startswith("Meta-training:  50%|")
  # 32 s elapsed; 4 steps in the last 2 s: 2 steps/s, 5 steps to go in 2.5 s.
  assert "| 5/10 [00:32<00:02,  2.00step/s, " in line
  assert line.endswith("held-out psnr=17.26, inner=12.30 -> 12.70]")
  # Closing erases the bar: the caller's log lines are the record.
  assert screen(stream.getvalue()) == [""]


def test_a_resumed_bar_starts_at_its_step_and_times_the_steps_after_it(clock):
  stream = FakeTerminal()
  with progress.Bar(100, "step", "Meta-training", start=50, stream=stream) as bar:
    line = screen(stream.getvalue())[-1]
    assert "| 50/100 [00:00<?, ?step/s]" in line
    clock[0] += 30  # step 51 traces and compiles
    bar.update(51)
    assert "| 51/100 [00:30<?, ?step/s]" in screen(stream.getvalue())[-1]
    clock[0] += 4
    bar.update(53)
    line = screen(stream.getvalue())[-1]
  # 2 steps in 4 s: 2 s/step, 47 to go in 94 s. Counted from step 0 (53 in 34 s) or
  # from the start with step 51 (3 in 34 s) the rate and ETA would differ.
  assert "| 53/100 [00:34<01:34,  2.00s/step]" in line


def test_redraws_are_throttled(clock):
  stream = FakeTerminal()
  bar = progress.Bar(3, "signal", stream=stream)
  clock[0] += 1
  bar.update(1)
  bar.update(2)  # no time passed
  assert "2/3" not in stream.getvalue()
  clock[0] += 1
  bar.update(3)
  assert "3/3" in screen(stream.getvalue())[-1]
  bar.close()


def test_a_log_record_gets_its_own_line_above_the_bar(clock, root_handler):
  stream = FakeTerminal()
  root_handler.setStream(stream)
  handlers = list(logging.getLogger().handlers)
  with progress.Bar(4, "workload", "Benchmark", stream=stream) as bar:
    clock[0] += 1
    bar.update(1)
    logging.warning("a log line")
    lines = screen(stream.getvalue())
    assert lines[0] == "a log line"
    assert lines[1].startswith("Benchmark:  25%|") and "| 1/4 [" in lines[1]
    clock[0] += 1
    bar.update(2)
    assert len(screen(stream.getvalue())) == 2  # redrawn in place
  logging.warning("after the bar")
  assert screen(stream.getvalue()) == ["a log line", "after the bar", ""]
  # Closed, the bar has given the handlers back.
  assert logging.getLogger().handlers == handlers


def test_an_absl_record_on_stderr_gets_its_own_line(clock, monkeypatch):
  """The binaries log through absl's handler (no logging.StreamHandler); a bar
  writes to stderr by default."""
  stderr = FakeTerminal()
  monkeypatch.setattr(sys, "stderr", stderr)
  handler = absl_logging.ABSLHandler(absl_logging.PythonFormatter())
  handler.python_handler.stream = stderr
  logging.getLogger().addHandler(handler)
  try:
    with progress.Bar(4, "step", "Meta-training") as bar:
      clock[0] += 1
      bar.update(1)
      absl_logging.warning("an absl line")
      lines = screen(stderr.getvalue())
  finally:
    logging.getLogger().removeHandler(handler)
  assert lines[-2].endswith("] an absl line")
  assert lines[-1].startswith("Meta-training:  25%|") and "| 1/4 [" in lines[-1]
  assert not any("%|" in line for line in lines[:-1])


def test_a_narrow_terminal_gets_a_line_that_fits(clock, monkeypatch):
  class NarrowTerminal(FakeTerminal):

    def fileno(self):
      return 99

  monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((40, 24)))
  stream = NarrowTerminal()
  with progress.Bar(1000, "step", "Meta-training", stream=stream) as bar:
    clock[0] += 1
    bar.update(500, **{"held-out psnr": 17.26, "inner-batch psnr": "12.30 -> 12.70"})
    lines = screen(stream.getvalue())
  assert len(lines) == 1  # redrawn in place, never wrapped
  assert lines[0].startswith("Meta-training:  50%|")
  assert len(lines[0]) <= 40


def test_train_shows_held_out_and_inner_batch_psnr():
  from tf_metainit import train  # pylint: disable=g-import-not-at-top
  assert train._bar_values(0.1, 0.01, {}) == {"inner-batch psnr": "10.00 -> 20.00"}
  assert train._bar_values(0.1, 0.01, {"psnr": 17.5}) == {
      "held-out psnr": 17.5, "inner-batch psnr": "10.00 -> 20.00"}

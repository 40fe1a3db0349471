"""Ctrl-C and SIGTERM stop every binary within seconds, even inside a long TensorFlow
call.

Python runs a signal handler only between bytecodes, so a binary inside one long graph
call (a fit's while_loop, a collective waiting for a worker that never answers) hears
a Ctrl-C only when that call returns: half a minute later, or never. So the C-level
handler also writes the signal's number to a pipe (signal.set_wakeup_fd), and a thread
waiting on that pipe gives the main thread `grace` seconds to stop on its own (the
trainer saves after its step; the other binaries raise Stopped, printed as one line),
then prints that line itself and ends the process. A second signal ends it at once.
Every output the package writes is swapped in whole (files.py), so an exit at any
moment leaves the old output or the new one, never a mix.
"""

import os
import select
import signal
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
  """The user (Ctrl-C) or a scheduler (SIGTERM) stopped the command. A BaseException,
  as KeyboardInterrupt is: code that handles errors (`except Exception`) must not
  swallow it, and autograph, which wraps the exceptions of code it is tracing in its
  StagingError, lets it through unchanged."""

  def __init__(self, signum):
    self.signum = signum
    super().__init__(f"Stopped by {signal.Signals(signum).name}; what was written is "
                     "whole, what was unfinished was not written.")


def _raise_stopped(signum, frame):
  del frame
  raise Stopped(signum)


def install(grace):
  """Stops this process within `grace` seconds of SIGINT or SIGTERM. The main thread's
  handlers raise Stopped; code that stops in its own way (the trainer) may replace them
  for a while, and the watchdog still ends the process if it does not stop in time."""
  if threading.current_thread() is not threading.main_thread():
    return  # handlers can only be set from the main thread
  read, write = os.pipe()
  os.set_blocking(write, False)  # a full pipe must never block the signal handler
  for s in SIGNALS:
    signal.signal(s, _raise_stopped)
  signal.set_wakeup_fd(write, warn_on_full_buffer=False)
  threading.Thread(target=_watch, args=(read, grace), name="stop-watchdog",
                   daemon=True).start()


def _watch(read, grace):
  signum = _next_signal(read, None)
  _next_signal(read, grace)  # returns when time is up, or at a second signal
  name = signal.Signals(signum).name
  os.write(2, (f"ERROR: Stopped by {name} inside a call that did not return within "
               f"{grace:g} s; what was written is whole, what was unfinished was not "
               "written.\n").encode())
  os._exit(128 + signum)  # pylint: disable=protected-access


def _next_signal(read, timeout):
  """The next stopping signal's number from the wakeup pipe, or None after `timeout`
  seconds (None: wait for ever). Other signals (SIGCHLD, SIGWINCH) are skipped."""
  end = None if timeout is None else time.monotonic() + timeout
  while True:
    left = None if end is None else max(0.0, end - time.monotonic())
    ready, _, _ = select.select([read], [], [], left)
    if not ready:
      return None
    for number in os.read(read, 64):
      if number in SIGNALS:
        return number

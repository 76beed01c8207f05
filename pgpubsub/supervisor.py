"""The supervisor: runs N worker processes, restarts those that die, forwards signals.

Workers never start their own successors; only this parent does, with a bounded backoff.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from typing import Any

# Model-free imports only: a spawned child unpickles this module before django.setup().
from pgpubsub import readiness
from pgpubsub.conf import PgPubSubSettings, get_settings
from pgpubsub.options import LogOptions, WorkerOptions
from pgpubsub.shutdown import (
    STOP_AFTER_MESSAGE,
    STOP_NOW,
    ShutdownPolicy,
    block_signals,
    restore_signals,
)
from pgpubsub.timelimit import EXIT_TIME_LIMIT, signal_self_if_orphaned, stop_with_parent
from pgpubsub.wakeup import Wakeup

logger = logging.getLogger(__name__)

DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"
_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0
_HEALTHY_AFTER = 10.0  # a child that lived this long restarts without delay
_KILL_GRACE = 5.0


def configure_logging(options: LogOptions) -> None:
    """Configure the root logger for a process that ``listen`` owns."""
    logging.basicConfig(
        level=options.level.upper(), format=options.format or DEFAULT_LOG_FORMAT, force=True
    )


def run_worker_process(options: WorkerOptions, log: LogOptions) -> None:
    """Entry point of a worker child process (must be importable for ``spawn``)."""
    # Own process group: a Ctrl-C in the terminal reaches the parent only, which stops the
    # workers; otherwise the child would see two signals and stop at once.
    os.setpgrp()
    # Inherited from the supervisor (fork) or its mask (spawn): a worker does not restart.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    # A supervisor killed with SIGKILL cannot stop its workers: the kernel asks them to stop
    # (held until the worker's handler is installed), even one busy with a message.
    if stop_with_parent(STOP_AFTER_MESSAGE):
        parent = multiprocessing.parent_process()
        signal_self_if_orphaned(parent.pid if parent is not None else None, STOP_AFTER_MESSAGE)
    configure_logging(log)
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from pgpubsub.worker import create_worker

    sys.exit(create_worker(options).run())


def _exit_reason(code: int) -> str:
    """How a worker process ended, in words (a negative exit code is a signal's number)."""
    if code == EXIT_TIME_LIMIT:
        return f"exited with code {code}: a message or a task ran past its time limit"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"was killed by signal {-code}"
    hint = " (kill -9, or the out-of-memory killer)" if name == "SIGKILL" else ""
    return f"was killed by signal {-code}, {name}{hint}"


@dataclass
class _Slot:
    number: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    backoff: float = _BACKOFF_START
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)

    def schedule_restart(self, now: float) -> float:
        """Plan the restart of this slot's worker, which just exited; return the delay.

        A worker that ran for more than ``_HEALTHY_AFTER`` seconds restarts at once; quick
        exits in a row (a crash loop) wait longer each time: 1 s, 2 s, 4 s... up to 30 s.
        """
        if now - self.started_at > _HEALTHY_AFTER:
            self.backoff, delay = _BACKOFF_START, 0.0
        else:
            self.backoff = min(self.backoff * 2, _BACKOFF_MAX)
            delay = self.backoff
        self.restart_at = now + delay
        return delay


class Supervisor:
    """Starts ``processes`` workers and keeps them running until SIGTERM/SIGINT.

    SIGHUP replaces the workers: each finishes its current message and exits, and a new
    process (which loads the code anew, with the ``spawn`` start method) takes its place.
    """

    def __init__(
        self,
        options: WorkerOptions,
        *,
        processes: int = 1,
        start_method: str = "spawn",
        restart_on_failure: bool = True,
        log: LogOptions | None = None,
        settings: PgPubSubSettings | None = None,
    ) -> None:
        self.options = options
        self.context: Any = multiprocessing.get_context(start_method)
        self.restart_on_failure = restart_on_failure
        self.log = log or LogOptions()
        self.shutdown_timeout = (settings or get_settings()).shutdown_timeout
        self.slots = [_Slot(number) for number in range(processes)]
        self.stopping = False
        self._codes_after_stop: list[int] = []
        self._stop_deadline = 0.0
        self._wakeup = Wakeup()
        self._shutdown = ShutdownPolicy(graceful=self._begin_stop, immediate=self._stop_now)

    def run(self) -> int:
        """Supervise until stopped; return the exit code for the command."""
        from pgpubsub.connection import close_django_connections

        self._wakeup.ring_on_signals()
        self._shutdown.install()
        signal.signal(signal.SIGHUP, self._replace_workers)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        # Children must not share the parent's database sockets (fork) and do not need them.
        close_django_connections()
        for slot in self.slots:
            self._start(slot)
        while True:
            self._wait()
            self._reap()
            if self.stopping:
                if all(slot.process is None for slot in self.slots):
                    clean = all(code == 0 for code in self._codes_after_stop)
                    logger.info(
                        "All workers stopped%s",
                        "" if clean else " (some had to be cut off)",
                        extra={"action": "stopped"},
                    )
                    return 0 if clean else 1
                if time.monotonic() > self._stop_deadline:
                    self._kill_remaining()
                continue
            self._restart_due()
            # Reaped slots only: a worker that died after _reap() is reaped (and restarted)
            # on the next turn; asking is_alive() again here would end the loop without it.
            if all(slot.process is None and slot.restart_at is None for slot in self.slots):
                failed = any(code != 0 for slot in self.slots for code in slot.exit_codes)
                return 1 if failed else 0

    def _start(self, slot: _Slot) -> None:
        process = self.context.Process(
            target=run_worker_process,
            args=(self.options.for_worker(slot.number), self.log),
            name=f"pgpubsub-worker-{slot.number}",
        )
        if self.context.get_start_method() == "spawn":
            # Started now, not inside start(): starting it unblocks SIGTERM and SIGINT.
            resource_tracker.ensure_running()
        # Blocked until the child installs its handlers (it inherits the mask), and here
        # until the slot knows the child: a stop request in between reaches it too.
        mask = block_signals((signal.SIGHUP,))
        try:
            process.start()
            slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        finally:
            restore_signals(mask)
        logger.info(
            "Started worker %s (pid %s)",
            slot.number,
            process.pid,
            extra={"action": "worker_started", "pid": process.pid},
        )
        readiness.announce(
            self.options.ready_file,
            readiness.WORKER_STARTED,
            worker=slot.number,
            worker_pid=process.pid,
        )

    def _alive(self) -> list[BaseProcess]:
        return [s.process for s in self.slots if s.process is not None and s.process.is_alive()]

    def _wait(self) -> None:
        waitables: list[object] = [p.sentinel for p in self._alive()]
        waitables.append(self._wakeup.fileno)
        timeouts = [s.restart_at - time.monotonic() for s in self.slots if s.restart_at]
        timeout = max(0.0, min([1.0, *timeouts]))
        multiprocessing.connection.wait(waitables, timeout=timeout)  # type: ignore[arg-type]
        self._wakeup.clear()

    def _reap(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None or process.is_alive():
                continue
            process.join()
            code = process.exitcode if process.exitcode is not None else -1
            slot.process = None
            slot.exit_codes.append(code)
            if self.stopping:
                self._codes_after_stop.append(code)
                continue
            if code == 0:
                self._replace(slot, process.pid)
                continue
            if code == EXIT_TIME_LIMIT and self.restart_on_failure:
                # It ran for the limit, and its successor is not to be delayed by a backoff.
                logger.error(
                    "Worker %s (pid %s) %s; starting its replacement",
                    slot.number,
                    process.pid,
                    _exit_reason(code),
                    extra={"action": "worker_replaced", "exit_code": code},
                )
                slot.backoff, slot.restart_at = _BACKOFF_START, time.monotonic()
                continue
            reason = _exit_reason(code)
            if not self.restart_on_failure:
                logger.error(
                    "Worker %s (pid %s) %s; not restarting (--no-restart-on-failure)",
                    slot.number,
                    process.pid,
                    reason,
                    extra={"action": "worker_died", "exit_code": code},
                )
                continue
            delay = slot.schedule_restart(time.monotonic())
            logger.error(
                "Worker %s (pid %s) %s; restarting in %.1f s",
                slot.number,
                process.pid,
                reason,
                delay,
                extra={"action": "worker_died", "exit_code": code},
            )

    def _replace(self, slot: _Slot, pid: int | None) -> None:
        """Start a successor at once to a worker that exited cleanly: it was asked to (SIGHUP,
        or a SIGTERM sent to it alone) or retired itself (``--max-messages``/``--max-memory``).
        """
        logger.info(
            "Worker %s (pid %s) exited cleanly: starting its replacement",
            slot.number,
            pid,
            extra={"action": "worker_replaced", "pid": pid},
        )
        slot.backoff, slot.restart_at = _BACKOFF_START, time.monotonic()

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _begin_stop(self, signal_name: str) -> None:
        logger.info(
            "%s received: stopping %s worker(s)",
            signal_name,
            len(self._alive()),
            extra={"action": "shutting_down"},
        )
        self.stopping = True
        self._stop_deadline = time.monotonic() + self.shutdown_timeout + _KILL_GRACE
        for slot in self.slots:
            slot.restart_at = None
        self._signal_workers()

    def _stop_now(self, signal_name: str) -> None:
        logger.warning("Second %s: workers stop at once", signal_name, extra={"action": "killed"})
        self._signal_workers(STOP_NOW)

    def _replace_workers(self, signum: int, frame: object = None) -> None:
        """SIGHUP: have every worker finish its message and exit; each is replaced."""
        if self.stopping:
            return
        logger.info(
            "SIGHUP received: replacing %s worker(s) once each has finished its message",
            len(self._alive()),
            extra={"action": "replacing_workers"},
        )
        self._signal_workers()

    def _signal_workers(self, signum: signal.Signals = STOP_AFTER_MESSAGE) -> None:
        """Send ``signum`` to each worker (:mod:`pgpubsub.shutdown` says what each means)."""
        for process in self._alive():
            if process.pid is not None:
                os.kill(process.pid, signum)

    def _kill_remaining(self) -> None:
        for process in self._alive():
            if process.pid is not None:
                logger.error("Worker pid %s did not stop in time: killing it", process.pid)
                os.kill(process.pid, signal.SIGKILL)

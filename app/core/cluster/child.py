"""A chat engine in a child process, so a model split across machines cannot take Camelid down.

llama.cpp's RPC backend aborts the whole process from C when a worker cannot be reached at
registration, dies after the load, or speaks another protocol version. `ChildEngine` runs the real
`Engine` in a process of its own (multiprocessing "spawn": no threads or llama.cpp state are
inherited) and offers the same methods, arguments and results, so the chat (CLI, GUI) and the API
server use it as they use an `Engine`. When the child dies, the pending call and every later one
raise `ModelLoadError` (a load) or `GenerationError` (anything else) with a sentence that names the
machines (`label`); `loaded` turns False and Camelid keeps running. The next `load()` starts a
fresh child (running `setup` again).

How it talks to the child, over two pipes:

- Requests (op, id, control count, args) go down the request pipe; the child's main thread, which
  owns the model, runs them one at a time. While one runs, the child sends its streamed pieces and
  load-progress fractions back on the same pipe, and the caller, blocked in its method reading the
  pipe, calls `on_text` / `progress` on its own thread, as `Engine` does. Every wait watches the
  process's sentinel, so a dead child is noticed at once and nothing hangs.
- Control messages (reserve a ticket, stop, cancel a ticket, cancel a load) go down a second pipe
  to a small reader thread in the child that applies them to its `Engine` at once (its stop and
  cancel are thread-safe), since the main thread is busy generating.

Tickets: the parent numbers them (`reserve_reply()` returns at once) and sends each as a "reserve"
control message; the child's engine reserves one ticket per such message, so the two counters
agree (every chat and completion is sent with a ticket, the parent reserving one when the caller
gave none). A request carries how many control messages were sent before it, and the child starts
it only once those are applied, so Send, Stop, then the request stops it before its prompt is
evaluated, exactly as in `Engine`. The parent also keeps Engine's ticket state (last reserved,
stopped up to, cancelled one by one); a new child is brought to it first ("sync"), so a ticket
reserved, and a Stop pressed, before the child started (the load still queued) still count.

Load progress goes in step: the child waits for the caller's answer to each fraction, so a
`progress` returning False or a `cancel` Event set stops the load at llama.cpp's next report, as
in-process; a `cancel` set between reports is also sent as a control message.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.chat.chat_template import TemplateLimits
from app.core.chat.engine import GenerateOptions, LoadParams, LoadReport, OnText, Progress, Reply
from app.core.chat.sampling import SamplingSettings
from app.core.errors import CamelidError, GenerationError, ModelLoadError
from app.core.fit import LoadChoices, MemoryPlan

_log = logging.getLogger(__name__)

#: What runs in the child before anything loads: a picklable top-level function, or
#: (module, function name, positional arguments) for one imported there.
Setup = Callable[[], None] | tuple[str, str, Sequence[Any]]

#: Seconds a new child may take to start and run `setup` (registering RPC servers included).
START_TIMEOUT_S = 120.0
#: Seconds a child is given to unload and exit before it is terminated, then killed.
EXIT_TIMEOUT_S = 15.0
#: Seconds a call may go on answering nothing after Stop before the child is ended.
STOP_TIMEOUT_S = 30.0
#: How often a waiting caller looks at a load's cancel Event and at a Stop's deadline.
_POLL_S = 0.1


# --------------------------------------------------------------------------
# Errors across the pipe
# --------------------------------------------------------------------------
def _error_payload(exc: BaseException) -> tuple[str, str, str, str | None, dict[str, Any]]:
    """A CamelidError as (module, class name, message, fix, attributes); others by their text."""
    if isinstance(exc, CamelidError):
        state = dict(vars(exc))
        try:
            pickle.dumps(state)
        except Exception:
            state = {"message": exc.message, "fix": exc.fix}
        return type(exc).__module__, type(exc).__qualname__, exc.message, exc.fix, state
    return "", type(exc).__name__, str(exc), None, {}


def _rebuild_error(payload: tuple[str, str, str, str | None, dict[str, Any]]) -> CamelidError:
    """The child's exception as the same CamelidError subclass; GenerationError with its text otherwise."""
    module, name, message, fix, state = payload
    if module:
        try:
            cls: Any = importlib.import_module(module)
            for part in name.split("."):
                cls = getattr(cls, part)
            if isinstance(cls, type) and issubclass(cls, CamelidError):
                error: CamelidError = cls.__new__(cls)
                Exception.__init__(error, message)
                error.message, error.fix = message, fix
                error.__dict__.update(state)
                return error
        except Exception:
            _log.debug("could not rebuild %s.%s", module, name, exc_info=True)
    return GenerationError(f"The model's process failed ({name}: {message}).",
                           "Try again; if it repeats, load the model again.")


def _exit_detail(exitcode: int | None) -> str:
    if exitcode is None:
        return "its process stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"its process was ended by {name}"
    return f"its process ended with exit code {exitcode}"


# --------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------
def _run_setup(setup: Setup | None) -> None:
    if setup is None:
        return
    if isinstance(setup, tuple):
        module, function, args = setup
        getattr(importlib.import_module(module), function)(*args)
    else:
        setup()


class _ChildState:
    """What the child's control reader shares with its main thread."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.applied = 0
        self.cond = threading.Condition()
        #: The request id of the load running now, and the Event that cancels it.
        self.load_id: int | None = None
        self.load_cancel = threading.Event()
        self.parent_gone = False

    def control(self, conn: multiprocessing.connection.Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                with self.cond:
                    self.parent_gone = True
                    self.cond.notify_all()
                self.engine.stop()
                return
            op = message[0]
            if op == "sync":
                self.sync(*message[1:])
            elif op == "reserve":
                self.engine.reserve_reply()
            elif op == "stop":
                self.engine.stop()
            elif op == "cancel":
                self.engine.cancel(int(message[1]))
            elif op == "cancel_load":
                with self.cond:
                    if self.load_id == message[1]:
                        self.load_cancel.set()
            with self.cond:
                self.applied += 1
                self.cond.notify_all()

    def sync(self, issued: int, stopped_upto: int, cancelled: Sequence[int]) -> None:
        """Bring a new child's engine to the parent's tickets (reserved and stopped before it started),
        through its public methods: reserve up to the last stopped ticket, stop, reserve the rest."""
        for _ in range(stopped_upto):
            self.engine.reserve_reply()
        if stopped_upto:
            self.engine.stop()
        for _ in range(issued - stopped_upto):
            self.engine.reserve_reply()
        for ticket in cancelled:
            self.engine.cancel(ticket)

    def wait_applied(self, count: int) -> None:
        """Until the control messages sent before a request are applied (they are already in the pipe)."""
        deadline = time.monotonic() + 10.0
        with self.cond:
            while self.applied < count and not self.parent_gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(left)


def _child_main(requests: multiprocessing.connection.Connection,
                controls: multiprocessing.connection.Connection, setup: Setup | None) -> None:
    """The child process: run `setup`, then the parent's requests on this (the owner) thread."""
    try:
        _run_setup(setup)
        from app.core.chat.engine import Engine

        engine = Engine()
    except BaseException as exc:
        requests.send((0, "error", _error_payload(exc)))
        return
    state = _ChildState(engine)
    threading.Thread(target=state.control, args=(controls,), name="camelid-child-control",
                     daemon=True).start()
    requests.send((0, "ready", os.getpid()))
    while True:
        try:
            request_id, op, control_count, args = requests.recv()
        except (EOFError, OSError):
            break
        state.wait_applied(control_count)
        try:
            try:
                result = _dispatch(engine, state, requests, request_id, op, args)
            except (BrokenPipeError, EOFError):
                break  # the parent is gone
            except BaseException as exc:
                requests.send((request_id, "error", _error_payload(exc)))
            else:
                requests.send((request_id, "result", result))
        except OSError:
            break
        if op == "exit":
            break
    engine.unload()


def _dispatch(engine: Any, state: _ChildState, conn: multiprocessing.connection.Connection,
              request_id: int, op: str, args: dict[str, Any]) -> Any:
    def text(piece: str) -> None:
        conn.send((request_id, "text", piece))

    limits = args.pop("template_limits", None)
    if limits is not None:
        engine.template_limits = limits
    if op == "load":
        def progress(fraction: float) -> None:
            # In step with the caller, as in Engine: its answer (False, or its cancel Event set)
            # cancels the load at llama.cpp's next progress report.
            conn.send((request_id, "progress", fraction))
            answer = conn.recv()
            if answer[0] == "ack" and not answer[1]:
                state.load_cancel.set()

        with state.cond:
            state.load_id = request_id
            state.load_cancel.clear()
        try:
            report = engine.load(args["path"], args["params"], plan=args["plan"],
                                 choices=args["choices"], progress=progress,
                                 cancel=state.load_cancel)
        finally:
            with state.cond:
                state.load_id = None
        return report, engine.n_ctx, engine.template_source, engine.architecture
    if op in ("chat", "complete"):
        method = engine.chat if op == "chat" else engine.complete
        return method(args["input"], args["sampling"], on_text=text, ticket=args["ticket"],
                      options=args["options"])
    if op == "exit":
        engine.unload()
        return None
    if op == "unload":
        engine.unload()
        return None
    if op == "count_text":
        return engine.count_text(args["text"])
    if op == "count_tokens":
        return engine.count_tokens(args["messages"])
    if op == "render":
        return engine.render(args["messages"])
    if op == "tokenize_prompt":
        return engine.tokenize_prompt(args["messages"], deadline=args["deadline"], tools=args["tools"])
    if op == "clear_cache":
        engine.clear_cache()
        return None
    if op == "set_chat_template":
        engine.set_chat_template(args["template"])
        return engine.template_source
    if op == "environ":  # the child's environment: what `setup` set there can be checked
        return dict(os.environ)
    raise GenerationError(f"The model's process does not know the request {op!r}.")


# --------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------
@dataclass
class _Loaded:
    report: LoadReport
    n_ctx: int
    template_source: str | None
    architecture: str | None


class _ChildDied(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ChildEngine:
    """An `Engine` whose model lives in a child process; the same methods, arguments and results.

    `setup` runs in the child before anything loads (e.g. registering llama.cpp RPC servers);
    `label` names the machines in the sentence a failure gives ("the machines 10.0.0.2:50052 and
    10.0.0.3:50052"). Calls may come from any thread; they run one at a time. `stop()`, `cancel()`
    and `reserve_reply()` act at once, from any thread, also while a call runs. Callbacks run on the
    calling thread. `close()` (or `unload()`) unloads the model and ends the child.
    """

    def __init__(self, setup: Setup | None = None, *, label: str = "other machines",
                 start_timeout: float = START_TIMEOUT_S, stop_timeout: float = STOP_TIMEOUT_S) -> None:
        self.setup = setup
        self.label = label
        self.start_timeout = start_timeout
        #: Seconds a call may go on answering nothing after Stop (or a load's cancel) before the child
        #: is ended: llama.cpp blocked on a machine that no longer answers never reads the stop flag.
        self.stop_timeout = stop_timeout
        #: The ticket of the reply running now, and when a stop of the running call was asked.
        self._running_ticket: int | None = None
        self._stop_asked: float | None = None
        #: Time and size limits for rendering the chat template, sent with every request that renders.
        self.template_limits = TemplateLimits()
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._requests: multiprocessing.connection.Connection | None = None
        self._controls: multiprocessing.connection.Connection | None = None
        self._child_pid: int | None = None
        #: One call at a time on the request pipe; control messages under their own lock.
        self._call_lock = threading.RLock()
        self._control_lock = threading.Lock()
        self._controls_sent = 0
        #: The parent's copy of the child engine's tickets (Engine's rules), so a child started later
        #: (or again) begins with every ticket reserved, stopped and cancelled before it.
        self._issued = 0
        self._stopped_upto = 0
        self._cancelled: set[int] = set()
        self._next_id = 0
        self._loaded: _Loaded | None = None
        self._model_path: Path | None = None
        #: The sentence of the child's death, until the next load starts a new one.
        self._failure: str | None = None

    # -- state (cached in the parent) ----------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def report(self) -> LoadReport | None:
        return self._loaded.report if self._loaded is not None else None

    @property
    def model_path(self) -> Path | None:
        return self._model_path if self._loaded is not None else None

    @property
    def n_ctx(self) -> int:
        return self._require_model().n_ctx

    @property
    def template_source(self) -> str | None:
        return self._loaded.template_source if self._loaded is not None else None

    @property
    def architecture(self) -> str | None:
        return self._loaded.architecture if self._loaded is not None else None

    @property
    def pid(self) -> int | None:
        """The child process's id while it runs."""
        return self._child_pid if self._alive() else None

    @property
    def failure(self) -> str | None:
        """The sentence saying why the child stopped, if it died (cleared by the next load)."""
        return self._failure

    def _alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _require_model(self) -> _Loaded:
        if self._failure is not None:
            raise GenerationError(self._failure)
        if self._loaded is None:
            raise ModelLoadError("No model is loaded.", "Load a model first.")
        return self._loaded

    # -- the child process -----------------------------------------------------------------
    def _start(self) -> None:
        parent_requests, child_requests = self._context.Pipe(duplex=True)
        child_controls, parent_controls = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_child_main, name="camelid-model",
                                        args=(child_requests, child_controls, self.setup), daemon=True)
        process.start()
        child_requests.close()
        child_controls.close()
        with self._control_lock:
            self._process, self._requests, self._controls = process, parent_requests, parent_controls
            self._controls_sent = 0
            self._send_control_locked(("sync", self._issued, self._stopped_upto,
                                       sorted(self._cancelled)))
        deadline = time.monotonic() + self.start_timeout
        try:
            message = self._receive(deadline=deadline)
        except _ChildDied as died:
            raise self._died(died.detail, ModelLoadError) from None
        if message is None:
            self._end(kill=True)
            raise ModelLoadError(
                f"The model's process for {self.label} did not start within "
                f"{self.start_timeout:.0f} seconds (registering the machines may be stuck).",
                "Check that the machines are on and reachable, then load the model again.")
        _request_id, kind, payload = message
        if kind == "error":
            self._end(kill=False)
            raise _rebuild_error(payload)
        self._child_pid = int(payload)

    def _receive(self, *, deadline: float | None = None,
                 cancel: threading.Event | None = None) -> tuple[int, str, Any] | None:
        """The child's next message; None at the deadline or when `cancel` is set; _ChildDied on its death."""
        assert self._requests is not None and self._process is not None
        conn, sentinel = self._requests, self._process.sentinel
        while True:
            timeout = _POLL_S if cancel is not None else None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            ready = multiprocessing.connection.wait([conn, sentinel], timeout)
            if conn in ready:
                try:
                    message: tuple[int, str, Any] = conn.recv()
                    return message
                except (EOFError, OSError):
                    pass  # the child is gone: its exit code below
            if ready:
                raise _ChildDied(self._reap())
            if cancel is not None and cancel.is_set():
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _reap(self) -> str:
        """After the child died: its exit code in words; pipes closed, process joined."""
        process = self._process
        exitcode = None
        if process is not None:
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
            exitcode = process.exitcode
        self._close_pipes()
        self._process = None
        self._child_pid = None
        return _exit_detail(exitcode)

    def _close_pipes(self) -> None:
        for conn in (self._requests, self._controls):
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
        self._requests = self._controls = None

    def _sentence(self, detail: str) -> str:
        return (f"The model split across {self.label} stopped: one of those machines failed or was "
                f"disconnected ({detail}).")

    @staticmethod
    def _fix() -> str:
        return ("Camelid is still running; load the model again when the machines are back, or load "
                "a model that fits here.")

    def _died(self, detail: str, error: type[CamelidError]) -> CamelidError:
        self._failure = f"{self._sentence(detail)} {self._fix()}"
        self._loaded = None
        return error(self._sentence(detail), self._fix())

    def _end(self, *, kill: bool) -> None:
        """End the child: ask it to exit (unloading), then terminate, then kill; no zombie is left."""
        process = self._process
        if process is None:
            return
        if not kill and process.is_alive() and self._requests is not None:
            try:
                self._next_id += 1
                with self._control_lock:
                    count = self._controls_sent
                self._requests.send((self._next_id, "exit", count, {}))
                deadline = time.monotonic() + EXIT_TIMEOUT_S
                while True:
                    message = self._receive(deadline=deadline)
                    if message is None or (message[0] == self._next_id and message[1] != "text"):
                        break
            except (_ChildDied, OSError):
                pass
        if self._process is not None:
            if kill:  # it does not answer (or may be frozen, where SIGTERM waits): nothing to save
                process.kill()
            process.join(EXIT_TIMEOUT_S if not kill else 3.0)
            if process.is_alive():
                process.terminate()
                process.join(3.0)
            if process.is_alive():
                process.kill()
                process.join(3.0)
            with contextlib.suppress(ValueError):
                process.close()
        self._close_pipes()
        self._process = None
        self._child_pid = None

    # -- control messages (any thread) -----------------------------------------------------
    def _send_control(self, message: tuple[Any, ...]) -> bool:
        with self._control_lock:
            return self._send_control_locked(message)

    def _send_control_locked(self, message: tuple[Any, ...]) -> bool:
        conn = self._controls
        if conn is None:
            return False
        try:
            conn.send(message)
        except (OSError, ValueError):  # the child is gone (or going): the caller's call says so
            return False
        self._controls_sent += 1
        return True

    def reserve_reply(self) -> int:
        """A ticket for a reply about to be requested (any thread); pass it to `chat(ticket=...)`."""
        with self._control_lock:
            self._issued += 1
            self._send_control_locked(("reserve", self._issued))
            return self._issued

    def stop(self) -> None:
        """End the current reply, and every reply reserved before now, as soon as possible. Any thread."""
        with self._control_lock:
            self._stopped_upto = self._issued
            self._cancelled.clear()
            if self._running_ticket is not None and self._stop_asked is None:
                self._stop_asked = time.monotonic()
            self._send_control_locked(("stop",))

    def cancel(self, ticket: int) -> None:
        """End the reply of this one ticket (running or not yet started), leaving others alone. Any thread."""
        with self._control_lock:
            if ticket > self._stopped_upto:
                self._cancelled.add(int(ticket))
            if ticket == self._running_ticket and self._stop_asked is None:
                self._stop_asked = time.monotonic()
            self._send_control_locked(("cancel", int(ticket)))

    # -- requests --------------------------------------------------------------------------
    def _call(self, op: str, args: dict[str, Any], *, error: type[CamelidError] = GenerationError,
              on_text: OnText | None = None, progress: Progress | None = None,
              cancel: threading.Event | None = None, ticket: int | None = None) -> Any:
        """Send one request and read the child's messages until its result (callbacks on this thread)."""
        with self._call_lock:
            if self._requests is None or not self._alive():
                if self._failure is not None:
                    raise error(*self._failure_parts())
                raise ModelLoadError("No model is loaded.", "Load a model first.")
            self._next_id += 1
            request_id = self._next_id
            with self._control_lock:
                count = self._controls_sent
                self._running_ticket, self._stop_asked = ticket, None
            try:
                return self._run_call(request_id, op, count, args, error=error, on_text=on_text,
                                      progress=progress, cancel=cancel, ticket=ticket)
            finally:
                with self._control_lock:
                    self._running_ticket = self._stop_asked = None

    def _run_call(self, request_id: int, op: str, count: int, args: dict[str, Any], *,
                  error: type[CamelidError], on_text: OnText | None, progress: Progress | None,
                  cancel: threading.Event | None, ticket: int | None) -> Any:
        assert self._requests is not None
        try:
            self._requests.send((request_id, op, count, args))
        except (OSError, ValueError):
            raise self._died(self._reap(), error) from None
        failed: BaseException | None = None
        cancel_sent = False
        while True:
            try:
                message = self._receive(deadline=time.monotonic() + _POLL_S)
            except _ChildDied as died:
                raise self._died(died.detail, error) from None
            if cancel is not None and cancel.is_set() and not cancel_sent:
                self._send_control(("cancel_load", request_id))
                cancel_sent = True
                with self._control_lock:
                    self._stop_asked = self._stop_asked or time.monotonic()
            asked = self._stop_asked
            if message is None and asked is not None and \
                    time.monotonic() - asked > self.stop_timeout:
                self._end(kill=True)
                raise self._died(f"it answered nothing for {self.stop_timeout:.0f} seconds after "
                                 "Stop, so Camelid ended its process", error)
            if message is None:
                continue
            message_id, kind, payload = message
            if message_id != request_id:  # a late message of an abandoned request
                if kind == "progress":  # its load waits for an answer: cancel it
                    with contextlib.suppress(OSError, ValueError):
                        self._requests.send(("ack", False))
                continue
            if kind == "text":
                if on_text is not None and failed is None:
                    try:
                        on_text(payload)
                    except BaseException as exc:  # as in Engine: the reply ends, the error is raised
                        failed = exc
                        if ticket is not None:
                            self.cancel(ticket)
            elif kind == "progress":
                wanted = None
                if progress is not None:
                    try:
                        wanted = progress(payload)
                    except Exception:
                        wanted = None  # as in Engine: a failing progress callback is ignored
                go_on = wanted is not False and not (cancel is not None and cancel.is_set())
                with contextlib.suppress(OSError, ValueError):  # a gone child: the next read says so
                    self._requests.send(("ack", go_on))
            elif kind == "error":
                if failed is not None:
                    raise failed
                raise _rebuild_error(payload)
            else:
                if failed is not None:
                    raise failed
                return payload

    def _failure_parts(self) -> tuple[str, str]:
        failure = self._failure or ""
        fix = self._fix()
        return failure.removesuffix(f" {fix}"), fix

    def load(self, path: Path | str, params: LoadParams | None = None, *, plan: MemoryPlan | None = None,
             choices: LoadChoices | None = None, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> LoadReport:
        """Load `path` in the child (starting one, running `setup`, if none runs), as `Engine.load`.

        `progress` returning False, or `cancel` set, cancels the load (ModelLoadError).
        """
        with self._call_lock:
            self._loaded = None
            if not self._alive():
                self._end(kill=True)
                self._failure = None
                self._start()
            self._failure = None
            loaded, n_ctx, template_source, architecture = self._call(
                "load", {"path": str(path), "params": params, "plan": plan, "choices": choices},
                error=ModelLoadError, progress=progress, cancel=cancel)
            self._loaded = _Loaded(loaded, int(n_ctx), template_source, architecture)
            self._model_path = Path(loaded.path)
            return loaded

    def unload(self) -> None:
        """Unload the model and end the child (a later `load()` starts a new one)."""
        self.close()

    def close(self) -> None:
        """Stop any reply, unload the model and end the child process."""
        self.stop()
        with self._call_lock:
            self._loaded = None
            self._end(kill=False)

    def chat(self, messages: Sequence[dict[str, Any]], sampling: SamplingSettings | None = None, *,
             on_text: OnText | None = None, ticket: int | None = None,
             options: GenerateOptions | None = None) -> Reply:
        """As `Engine.chat`: the reply is written in the child, its text streamed to `on_text` here."""
        return self._generate("chat", [dict(m) for m in messages], sampling, on_text, ticket, options)

    def complete(self, prompt: str, sampling: SamplingSettings | None = None, *,
                 on_text: OnText | None = None, ticket: int | None = None,
                 options: GenerateOptions | None = None) -> Reply:
        """As `Engine.complete`: continue `prompt` as plain text, in the child."""
        return self._generate("complete", prompt, sampling, on_text, ticket, options)

    def _generate(self, op: str, data: Any, sampling: SamplingSettings | None, on_text: OnText | None,
                  ticket: int | None, options: GenerateOptions | None) -> Reply:
        self._require_model()
        if ticket is None:
            ticket = self.reserve_reply()
        try:
            reply: Reply = self._call(op, {"input": data, "sampling": sampling, "ticket": ticket,
                                           "options": options, "template_limits": self.template_limits},
                                      on_text=on_text, ticket=ticket)
        finally:
            with self._control_lock:
                self._cancelled.discard(ticket)  # as the child's engine did when the reply began
        return reply

    def count_text(self, text: str) -> int:
        self._require_model()
        return int(self._call("count_text", {"text": text}))

    def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        self._require_model()
        return int(self._call("count_tokens", {"messages": [dict(m) for m in messages],
                                               "template_limits": self.template_limits}))

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        self._require_model()
        return str(self._call("render", {"messages": [dict(m) for m in messages],
                                         "template_limits": self.template_limits}))

    def tokenize_prompt(self, messages: Sequence[dict[str, Any]], *, stop: threading.Event | None = None,
                        deadline: float | None = None,
                        tools: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """As `Engine.tokenize_prompt`; `stop` cannot cross processes (use `stop()`), and `deadline` is
        this process's `time.monotonic()`, converted for the child."""
        self._require_model()
        del stop
        remaining = None if deadline is None else deadline - time.monotonic()
        tokens: list[int] = self._call(
            "tokenize_prompt", {"messages": [dict(m) for m in messages],
                                "deadline": None if remaining is None else _ChildClock(remaining),
                                "tools": list(tools) if tools is not None else None,
                                "template_limits": self.template_limits})
        return tokens

    def clear_cache(self) -> None:
        self._require_model()
        self._call("clear_cache", {})

    def set_chat_template(self, template: str | None) -> None:
        loaded = self._require_model()
        loaded.template_source = self._call("set_chat_template",
                                            {"template": template, "template_limits": self.template_limits})

    def environ(self) -> dict[str, str]:
        """The child's environment variables (what `setup` set there), from the child itself."""
        if not self._alive():
            raise ModelLoadError("The model's process is not running.", "Load a model first.")
        environ: dict[str, str] = self._call("environ", {})
        return environ


class _ChildClock(float):
    """Seconds left, as a `time.monotonic()` deadline once unpickled in the child (clocks differ per
    process on some systems)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _deadline_in, (float(self),)


def _deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds

"""`camelid chat`: talk to a model in the terminal, or answer one prompt (`--prompt`).

Interactive conversations are saved in the chat store (the same one the
desktop app shows), unless they stay empty; a one-shot `--prompt` is saved
only with `--save` (or when it continues one with `--resume`), so scripts do
not fill the app's history. The model runs on an `EngineThread`, so the main thread stays free to
catch Ctrl-C at once: the first Ctrl-C stops the reply (even during a long
prompt evaluation), a second one, or one at the prompt, exits.
"""

from __future__ import annotations

import argparse
import logging
import select
import shutil
import signal
import sys
import tempfile
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

from app.cli.common import add_json_flag, at_least, print_json
from app.core.errors import CamelidError, ModelFileError, UsageError

T = TypeVar("T")

HELP = """Commands:
  /new            start a new conversation (same system prompt)
  /system [TEXT]  show or set the system prompt of this conversation
  /save [FILE]    export this conversation to Markdown (FILE.md) or JSON (FILE.json)
  /attach PATH    let this conversation draw on a file or folder (answers cite it)
  /quit           leave (so do Ctrl-D and Ctrl-C at the prompt)
Ctrl-C while the model writes stops the reply."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat with a model in the terminal, or answer one --prompt",
        description="Chat with a local GGUF model. MODEL is a .gguf path, a model in your "
                    "library, or `starter` (the default).")
    parser.add_argument("model", nargs="?", default="starter", metavar="MODEL",
                        help="a .gguf file, a library model name, or `starter`")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="answer this once and exit (not kept in the chat history unless --save)")
    parser.add_argument("--save", action="store_true",
                        help="with --prompt: keep the exchange in the chat history the desktop app shows")
    parser.add_argument("--system", metavar="TEXT", help="system prompt")
    parser.add_argument("--preset", choices=("precise", "balanced", "creative"),
                        help="sampling preset (default: the sampling_preset setting)")
    parser.add_argument("--max-tokens", type=at_least(1), metavar="N", help="longest reply in tokens")
    parser.add_argument("--temperature", type=float, metavar="T")
    parser.add_argument("--top-p", type=float, metavar="P")
    parser.add_argument("--top-k", type=int, metavar="K")
    parser.add_argument("--min-p", type=float, metavar="P")
    parser.add_argument("--repeat-penalty", type=float, metavar="R")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="fixed seed for repeatable replies: the same seed, conversation, settings and "
                             "model give the same reply, in this session or a new one, on this machine "
                             "(each prompt is then evaluated afresh, without reusing the cache)")
    parser.add_argument("--ctx", type=at_least(1), metavar="N", help="context window in tokens")
    parser.add_argument("--resume", type=int, metavar="ID", help="continue a saved conversation")
    parser.add_argument("--list", action="store_true", help="list saved conversations and exit")
    parser.add_argument("--docs", action="append", default=[], metavar="NAME",
                        help="answer from this document collection (`camelid docs list`), citing passages; "
                             "repeatable")
    parser.add_argument("--embedder", metavar="MODEL",
                        help="embedding model for --docs and /attach (default: the embedding_model setting)")
    parser.add_argument("--rpc", metavar="HOST:PORT", action="append", default=[],
                        help="split the model across this machine and the one running `camelid worker` there "
                             "(repeatable; probed first)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


class DocsSession:
    """The documents a terminal chat draws on: --docs collections and /attach'ed files.

    Everything that touches a model (the embedding model, counting tokens) runs on the engine's
    thread; the attachments of a conversation are a private collection named after it.
    """

    def __init__(self, worker: Any, names: list[str], embedder: str | None) -> None:
        self.worker = worker
        self.names = names
        self.embedder_choice = embedder
        self.index: Any = None
        self.embedding: Any = None
        self.loaded = False

    def _open(self) -> None:
        if self.index is None:
            from app.core.docs.store import DocIndex

            self.index = DocIndex()
            for name in self.names:
                self.index.collection(name)  # a missing collection is a sentence now, not at the first turn

    def _embedding(self, engine: Any) -> Any:
        if not self.loaded:
            from app.cli.docs import load_embedding

            known = [self.index.collection(n).embedder for n in self.names]
            self.embedding = load_embedding(self.embedder_choice,
                                            collection_embedder=next((k for k in known if k), None), quiet=True)
            self.loaded = True
        return self.embedding

    def start(self) -> None:
        if self.names:
            self._open()
            wait(self.worker.submit(self._embedding), self.worker)

    def augment(self, conversation_id: int) -> Any:
        if not self.names and self.index is None:
            return None
        from app.core.docs.answer import DocumentChat

        names = [*self.names, f"chat-{conversation_id}"]
        engine = self.worker.engine
        return lambda messages: DocumentChat(self.index, names, engine,
                                             embedding=self._embedding(engine))(messages)

    def attach(self, conversation_id: int, rest: str) -> None:
        from app.core.docs.indexer import add_paths

        if not rest:
            print("Usage: /attach PATH (a file or a folder).")
            return
        self._open()
        path = Path(rest).expanduser()
        try:
            report = wait(self.worker.submit(lambda e: add_paths(
                self.index, f"chat-{conversation_id}", [path], embedding=self._embedding(e), private=True)),
                self.worker)
        except CamelidError as exc:
            print(f"camelid: {exc}")
            return
        files = len(report.added) + len(report.updated) + len(report.unchanged)
        print(f"Attached {files} file{'s' if files != 1 else ''} ({report.chunks:,} new passages); the next "
              "answers draw on them.")
        for failed, problem in report.failed:
            print(f"  skipped {failed}: {problem}")

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def resolve_model(name: str) -> Path:
    """A model argument as a file: `starter`, a path, or a library name."""
    if name == "starter":
        from app.cli.starter import STARTER_FIX, locate

        found = locate()
        if found is not None:
            return found
        raise ModelFileError("The starter model is not on this machine.", STARTER_FIX)
    candidate = Path(name).expanduser()
    if candidate.exists():
        return candidate
    if looks_like_path(name):
        raise ModelFileError(f"There is no file at {candidate}.",
                             "Check the path, or see your models with `camelid models`.")
    from app.core.models import find_model

    return Path(find_model(name))


def looks_like_path(name: str) -> bool:
    """Whether a MODEL argument is meant as a file (a folder in it, ~, or .gguf) rather than a library name."""
    return "/" in name or "\\" in name or name.startswith("~") or name.lower().endswith(".gguf")


def run(args: argparse.Namespace) -> int:
    from app.core.chat import ChatStore

    if args.prompt is not None and not args.prompt.strip():
        raise CamelidError("The prompt is empty.", "Give --prompt some text, or leave it out to chat.")
    if args.save and args.prompt is None:
        raise CamelidError("--save goes with --prompt.",
                           "Interactive chats are kept anyway; drop --save, or add --prompt TEXT.")
    if args.prompt is not None and not args.save and args.resume is None and not args.list:
        # A one-shot that is not to be kept: the same code path, over a store that is thrown away.
        scratch = Path(tempfile.mkdtemp(prefix="camelid-oneshot-"))
        try:
            store = ChatStore(scratch / "chats.sqlite3")
            try:
                return chat(args, store, saved=False)
            finally:
                store.close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    store = ChatStore()
    if store.notice:  # the history was damaged and set aside, or cannot be saved: say so once
        print(f"camelid: note: {store.notice}", file=sys.stderr)
    try:
        if args.list:
            return list_conversations(store, as_json=args.json)
        return chat(args, store)
    finally:
        store.close()


def list_conversations(store: Any, *, as_json: bool) -> int:
    conversations = store.list_conversations()
    if as_json:
        print_json([{"id": c.id, "title": c.title, "model": c.model, "updated_at": c.updated_at}
                    for c in conversations])
    elif not conversations:
        print("No saved conversations yet.")
    else:
        for c in conversations:
            print(f"{c.id:5}  {c.title or 'Untitled'}  ({c.model or 'unknown model'})")
    return 0


def sampling_from_args(args: argparse.Namespace) -> Any:
    from app.core.chat import preset
    from app.core.settings import Settings

    name = args.preset or Settings()["sampling_preset"]
    try:
        return preset(name).with_(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                  min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                                  seed=args.seed, max_tokens=args.max_tokens)
    except UsageError as exc:  # the core names the fields; here the person typed flags
        raise UsageError(_flag_words(exc.message), "Give the flags values in those ranges.") from exc


#: Sampling fields as the flags that set them.
_FLAGS = {"max_tokens": "--max-tokens", "top_p": "--top-p", "top_k": "--top-k", "min_p": "--min-p",
          "repeat_penalty": "--repeat-penalty", "temperature": "--temperature"}


def _flag_words(text: str) -> str:
    for field, flag in _FLAGS.items():
        text = text.replace(field, flag)
    return text.replace("Invalid sampling settings: ", "")


def load_params(args: argparse.Namespace, path: Path, hardware: Any = None) -> tuple[Any, Any, list[str]]:
    from app.core.chat import plan_params
    from app.core.fit import LoadChoices
    from app.core.settings import Settings

    params, plan, notices = plan_params(path, LoadChoices.from_settings(Settings(), n_ctx=args.ctx),
                                        hardware=hardware)
    return params, plan, notices


def workers_hardware(endpoints: list[str]) -> Any:
    """This machine plus the --rpc workers (probed now: a dead one is a sentence here), or None."""
    if not endpoints:
        return None
    from app import paths
    from app.core.cluster.machines import with_workers
    from app.core.machine import detect

    return with_workers(detect(models_dir=paths.models_dir()), endpoints)


def chat(args: argparse.Namespace, store: Any, *, saved: bool = True) -> int:
    from app.core.chat import EngineThread

    if args.system is not None:
        args.system = _clean(args.system, "The system prompt")
    sampling = sampling_from_args(args)
    path = resolve_model(args.model)
    hardware = workers_hardware(list(args.rpc))
    params, plan, notices = load_params(args, path, hardware)
    if args.resume is not None:
        conversation = store.conversation(args.resume)
        if args.system is not None:
            conversation = store.update_conversation(conversation.id, system_prompt=args.system)
    else:
        conversation = store.create_conversation(model=path.name, system_prompt=args.system or "",
                                                 settings={"sampling": sampling.to_dict()})
    interactive = args.prompt is None
    if hardware is not None:
        from app.core.cluster.machines import engine_for

        # A model split across machines loads in a child process: a worker failure ends only it.
        worker = EngineThread(engine_for(hardware))
        for line in plan.reasons:
            if " holds " in line:
                print(f"note: {line}", file=sys.stderr)
    else:
        worker = EngineThread()
    docs = DocsSession(worker, list(args.docs), args.embedder)
    try:
        progress = _progress_printer(path.name) if interactive and not args.json else None
        cancel = threading.Event()
        report = wait(worker.load(path, params, plan=plan, progress=progress, cancel=cancel), worker, cancel)
        if progress is not None:
            print(file=sys.stderr)
        # llama.cpp logs an error line when a decode is aborted (every Stop);
        # here Camelid reports in sentences, so keep its log off the terminal.
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
        for notice in notices + report.notices:
            print(f"note: {notice}", file=sys.stderr)
        docs.start()
        if interactive:
            if report.memory is not None:
                print(f"memory: {report.memory.summary()}", file=sys.stderr)
            return interactive_chat(worker, store, conversation, sampling, report, docs)
        return one_shot(worker, store, conversation.id, args.prompt, sampling, as_json=args.json,
                        report=report, saved=saved, augment=docs.augment(conversation.id))
    finally:
        worker.close()
        docs.close()


def one_shot(worker: Any, store: Any, conversation_id: int, prompt: str, sampling: Any, *,
             as_json: bool, report: Any = None, saved: bool = True, augment: Any = None) -> int:
    from app.core.chat import send_message

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    # Reserved before the job is queued, so a Ctrl-C at once still stops this reply.
    ticket = worker.engine.reserve_reply()
    reply, _message = wait(worker.submit(
        lambda e: send_message(e, store, conversation_id, prompt, sampling,
                               on_text=None if as_json else show, ticket=ticket, augment=augment)), worker)
    stored = _message.stats or {}
    if as_json:
        s = reply.stats
        print_json({"reply": reply.text,
                    "stats": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                              "ttft_s": s.ttft_s, "tokens_per_s": s.tokens_per_s,
                              "stop_reason": s.stop_reason,
                              "prompt_tokens_evaluated": s.prompt_tokens_evaluated,
                              "prompt_tokens_per_s": s.prompt_tokens_per_s, "seed": s.seed},
                    "notices": reply.notices, "conversation_id": conversation_id if saved else None,
                    "load": load_summary(report) if report is not None else None}
                   | ({"citations": stored["citations"]} if "citations" in stored else {}))
    else:
        print(_ending(reply.stats.stop_reason))
        _print_sources(stored)
        for notice in reply.notices:
            print(f"note: {notice}", file=sys.stderr)
    return 0


def _print_sources(stats: dict[str, Any]) -> None:
    """The passages a documents answer cited (file, page, heading)."""
    from app.core.docs.answer import Citation

    for c in stats.get("citations") or []:
        citation = Citation(**{k: c.get(k) for k in ("n", "source", "page", "page_end", "heading", "text",
                                                      "start", "end")})
        print(f"  [{citation.n}] {citation.label}")


def load_summary(report: Any) -> dict[str, Any]:
    """How the model was loaded, for `--json`: the settings, the plan's verdict, and the plan checked
    against llama.cpp's own buffer report."""
    return {"n_ctx": report.n_ctx, "n_gpu_layers": report.params.n_gpu_layers,
            "flash_attn": report.params.flash_attn, "cache_type_k": report.params.cache_type_k,
            "cache_type_v": report.params.cache_type_v, "seconds": round(report.seconds, 3),
            "verdict": report.plan.verdict if report.plan is not None else None,
            "memory": report.memory.to_dict() if report.memory is not None else None,
            "notices": report.notices}


def interactive_chat(worker: Any, store: Any, conversation: Any, sampling: Any, report: Any,
                     docs: DocsSession | None = None) -> int:
    print(f"Chatting with {Path(report.path).name} (context {report.n_ctx} tokens). "
          "Type /help for commands; Ctrl-C stops a reply.")
    if conversation.messages:
        print(f"(resumed: {conversation.title}, {len(conversation.messages)} messages)")
    # A byte that is not UTF-8 must reach send_message (which replaces it), not end the chat in input().
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    on = [conversation]  # the conversation the loop is on (/new moves it), for the clean-up after it
    try:
        return _chat_loop(worker, store, on, sampling, docs)
    finally:
        _forget_if_empty(store, on[0])


def _forget_if_empty(store: Any, conversation: Any) -> None:
    """An empty conversation is not kept: it would only be an "Untitled" row in the app's list."""
    try:
        if not store.conversation(conversation.id).messages:
            store.delete(conversation.id)
    except CamelidError:
        pass  # the history cannot be written or read: nothing to tidy


def _chat_loop(worker: Any, store: Any, on: list[Any], sampling: Any, docs: DocsSession | None = None) -> int:
    from app.core.chat import send_message

    current = on[0]
    while True:
        try:
            line = input("\n> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        text = line.strip()
        if not text:
            continue
        if not text.startswith("/"):
            text = gather_paste(line, sys.stdin, _stdin_ready).strip()
        if text.startswith("/attach") and docs is not None:
            docs.attach(current.id, text.removeprefix("/attach").strip())
            continue
        if text.startswith("/"):
            previous = current
            current, leave = command(text, store, current)
            if current is not previous and current.id != previous.id:
                _forget_if_empty(store, previous)
            on[0] = current
            if leave:
                return 0
            continue

        wrap = WordWrap(sys.stdout)
        show = wrap.write

        conversation_id = current.id
        ticket = worker.engine.reserve_reply()
        augment = docs.augment(conversation_id) if docs is not None else None
        reply, message = wait(worker.submit(
            lambda e, cid=conversation_id, t=text, k=ticket, w=show, a=augment: send_message(
                e, store, cid, t, sampling, on_text=w, ticket=k, augment=a)), worker)
        wrap.flush()
        print(_ending(reply.stats.stop_reason))
        _print_sources(message.stats or {})
        for notice in reply.notices:
            print(f"note: {notice}", file=sys.stderr)


def command(text: str, store: Any, current: Any) -> tuple[Any, bool]:
    """Run a /command; returns (conversation, leave)."""
    name, _, rest = text.partition(" ")
    rest = rest.strip()
    if name in ("/quit", "/exit", "/q"):
        return current, True
    if name == "/help":
        print(HELP)
    elif name == "/new":
        current = store.create_conversation(model=current.model, system_prompt=current.system_prompt,
                                            settings=current.settings)
        print(f"New conversation {current.id}.")
    elif name == "/system":
        if rest:
            current = store.update_conversation(current.id, system_prompt=_clean(rest, "The system prompt"))
            print("System prompt set; it applies from the next reply.")
        else:
            current = store.conversation(current.id)
            print(current.system_prompt or "(no system prompt)")
    elif name == "/save":
        save(store, current, rest)
    else:
        print(f"Unknown command {name}. " + HELP.splitlines()[0].rstrip(":") + ": /help")
    return current, False


def save(store: Any, current: Any, rest: str) -> None:
    """`/save [FILE]`: a sentence for every outcome; a bad path never ends the chat."""
    target = Path(rest).expanduser() if rest else Path.cwd() / f"camelid-chat-{current.id}.md"
    if target.suffix.lower() not in (".md", ".markdown", ".json"):
        print(f"camelid: {target.name} does not say which format to write. "
              "End the name in .md for Markdown or .json for JSON.")
        return
    try:
        if not store.conversation(current.id).messages:
            print("Nothing to save yet: this conversation has no messages.")
            return
        print(f"Saved to {store.export(current.id, target)}")
    except CamelidError as exc:
        print(f"camelid: {exc}")


def gather_paste(first: str, stream: Any, ready: Any, *, limit: int = 10_000) -> str:
    """`first` plus the lines pasted with it, as one message.

    A paste of three lines arrives as three lines at once; on a terminal the
    ones already waiting (`ready()` says so at once) belong to the same
    message. A pipe or file sends one message per line, as before.
    """
    if not getattr(stream, "isatty", lambda: False)():
        return first
    lines = [first]
    while len(lines) < limit and ready():
        more = stream.readline()
        if not more:
            break
        lines.append(more.rstrip("\n"))
    return "\n".join(lines)


def _stdin_ready(timeout: float = 0.03) -> bool:
    try:
        return bool(select.select([sys.stdin], [], [], timeout)[0])
    except (OSError, ValueError):  # no select on this stream (Windows consoles): one line per message
        return False


class WordWrap:
    """Streamed text wrapped at the terminal's width between words (a pipe or file gets it unchanged)."""

    def __init__(self, out: Any, width: int | None = None) -> None:
        self.out = out
        tty = bool(getattr(out, "isatty", lambda: False)())
        self.width = width if width is not None else (shutil.get_terminal_size().columns if tty else 0)
        self.column = 0
        self.word = ""

    def write(self, text: str) -> None:
        if self.width <= 1:
            self.out.write(text)
            self.out.flush()
            return
        for char in text:
            if char == "\n":
                self._emit_word()
                self.out.write("\n")
                self.column = 0
            elif char in " \t":
                self._emit_word()
                if self.column < self.width:
                    self.out.write(char)
                    self.column += 1
            else:
                self.word += char
        self.out.flush()

    def flush(self) -> None:
        self._emit_word()
        self.out.flush()

    def _emit_word(self) -> None:
        if not self.word:
            return
        if self.column + len(self.word) > self.width and self.column > 0:
            self.out.write("\n")
            self.column = 0
        self.out.write(self.word)
        self.column += len(self.word)
        self.word = ""


def wait(future: Future[T], worker: Any, cancel: threading.Event | None = None) -> T:
    """The future's result, with Ctrl-C stopping the engine instead of killing the process.

    The first Ctrl-C calls engine.stop() (llama.cpp aborts within a graph
    node); a second one raises KeyboardInterrupt and the command exits.
    """
    if threading.current_thread() is not threading.main_thread():
        return future.result()
    presses = 0

    def on_sigint(_signum: int, _frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        worker.stop()
        if cancel is not None:
            cancel.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        while True:
            try:
                # A short timeout keeps the main thread returning to the
                # interpreter, where Python runs signal handlers.
                return future.result(timeout=0.1)
            except FutureTimeout:
                continue
    finally:
        signal.signal(signal.SIGINT, previous)


def _clean(text: str, where: str) -> str:
    """`text` safe to store (invalid UTF-8 replaced), with a note on stderr when something was replaced."""
    from app.core.chat.text import clean_text, invalid_text_notice

    cleaned, replaced = clean_text(text)
    if replaced:
        print(f"note: {invalid_text_notice(replaced, where)}", file=sys.stderr)
    return cleaned


def _progress_printer(name: str) -> Any:
    last = [-1]

    def show(fraction: float) -> None:
        percent = int(fraction * 100)
        if percent != last[0]:
            last[0] = percent
            print(f"\rLoading {name}… {percent}%", end="", file=sys.stderr, flush=True)
    return show


def _ending(stop_reason: str) -> str:
    """What to print after a reply: nothing when the model finished by itself."""
    return {"cancelled": " [stopped]", "length": " [cut: the max-tokens limit was reached]",
            "context": " [cut: the context window is full]"}.get(stop_reason, "")

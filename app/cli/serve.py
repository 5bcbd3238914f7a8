"""`camelid serve`: the local API server (OpenAI, Anthropic and Ollama compatible) in the terminal.

It prints the base URL and a ready `curl` line, then one line per request.
Models load when a request names them (only if the plan says they fit), or
at start with --model. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import threading
import time
from typing import Any

from app.cli.common import add_json_flag, at_least
from app.core.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve models to other apps: OpenAI, Anthropic and Ollama compatible API",
        description="Start a local API server. Editors, Open WebUI, scripts and agents talk to it as they "
                    "would to OpenAI (/v1), Anthropic (/v1/messages) or Ollama (/api). A request names any "
                    "model of `camelid models`; it is loaded if it fits this machine.")
    parser.add_argument("--model", metavar="NAME", help="load this model now (a library name, a .gguf path, "
                        "or `starter`); otherwise the first request's model is loaded")
    parser.add_argument("--port", type=at_least(0), default=1234, metavar="N", help="TCP port (default 1234)")
    parser.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                        help="address to listen on (default 127.0.0.1, this machine only); another address "
                             "lets the network in and needs --api-key")
    parser.add_argument("--api-key", metavar="KEY",
                        help="require this key ('Authorization: Bearer KEY' or 'x-api-key'); `generate` "
                             "makes a new one and shows it once")
    parser.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                        help="allow browser pages from ORIGIN (repeatable; e.g. http://localhost:3000)")
    parser.add_argument("--queue", type=at_least(1), default=32, metavar="N",
                        help="requests that may wait for the model before new ones get 429 (default 32)")
    parser.add_argument("--rpc", metavar="HOST:PORT", action="append", default=[],
                        help="also use the machine running `camelid worker` there (repeatable; probed first)")
    parser.add_argument("--idle-unload", type=at_least(0, float), default=15.0, metavar="MIN",
                        help="unload a model the server loaded after MIN idle minutes (0: never; default 15)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from app.core.server import ModelService, ServerConfig, ServerHandle, ThreadRunner
    from app.core.server.runner import new_api_key

    key = args.api_key
    generated = key == "generate"
    if generated:
        key = new_api_key()
    config = ServerConfig(host=args.host, port=args.port, api_key=key, cors=tuple(args.cors))
    hardware = None
    if args.rpc:
        from app.cli.chat import workers_hardware
        from app.core.chat import EngineThread
        from app.core.cluster.machines import engine_for

        first = workers_hardware(list(args.rpc))
        # Models load in a child process that registers the workers: a worker failure ends only it.
        runner = ThreadRunner(EngineThread(engine_for(first), name="camelid-server-engine"))
        hardware = lambda: workers_hardware(list(args.rpc))  # noqa: E731 (probed again at each load)
    else:
        runner = ThreadRunner()
    service = ModelService(runner, queue_limit=args.queue, idle_unload_s=args.idle_unload * 60,
                           hardware=hardware)
    handle = ServerHandle(service, config)
    try:
        loaded = _preload(service, args.model) if args.model else None
        handle.start()
        _announce(handle, loaded, key if generated else None, json_out=args.json)
        service.add_listener(lambda event, data: _log_line(event, data, json_out=args.json))
        stopped = threading.Event()
        try:
            while not stopped.wait(0.5):
                if not handle.running:
                    raise UsageError("The server stopped unexpectedly.", "See Camelid's log for why.")
        except KeyboardInterrupt:
            print("\nStopping the server." if not args.json else json.dumps({"event": "stopping"}), flush=True)
    finally:
        handle.stop()
        service.close()
        runner.close()
    return 0


def _preload(service: Any, name: str) -> Any:
    from app.cli.chat import resolve_model
    from app.core.models.library import find_library_model

    path = resolve_model(name)
    model = find_library_model(str(path))
    # On the owner thread, plan-checked: a model that does not fit is refused with the plan's reasons.
    service.runner.call(lambda: service.load_chat(model)).result()
    return model


def _announce(handle: Any, model: Any, key: str | None, *, json_out: bool) -> None:
    url = handle.url
    name = model.name if model is not None else _example_model(handle.service)
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": "Hello!"}]})
    auth = " -H 'Authorization: Bearer KEY'" if handle.config.api_key else ""
    curl = (f"curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}")
    if json_out:
        print(json.dumps({"event": "started", "url": url, "openai": f"{url}/v1", "anthropic": url,
                          "ollama": url, "model": model.name if model else None, "api_key": key,
                          "lan": handle.config.lan, "curl": curl}), flush=True)
        return
    print(f"Camelid is serving on {url}")
    print(f"  OpenAI:    {url}/v1    Anthropic: {url}    Ollama: {url}")
    if model is not None:
        report = handle.service.engine.report
        ctx = f", {report.n_ctx:,}-token context" if report is not None else ""
        print(f"  Model:     {model.name} (loaded{ctx})")
    else:
        print("  Models:    loaded when a request names them (`camelid models` lists the names)")
    if handle.config.lan:
        print(f"  WARNING: listening on {handle.config.host}: other machines on your network can reach this "
              "server. Every request needs the API key.")
    if key:
        print(f"  API key:   {key}")
        print("             (shown once: Camelid keeps only its hash. `--api-key generate` makes a new one.)")
    print(f"\nTry it:\n  {curl}\n\nCtrl-C stops the server.\n", flush=True)


def _example_model(service: Any) -> str:
    try:
        models = service.library()
    except Exception:
        return "MODEL"
    return models[0].name if models else "MODEL"


def _log_line(event: str, data: Any, *, json_out: bool) -> None:
    if event != "request":
        return
    if json_out:
        print(json.dumps({"event": "request", **data.to_dict()}), flush=True)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(data.at))
    tokens = f"{data.prompt_tokens}+{data.completion_tokens} tok" if data.prompt_tokens or data.completion_tokens \
        else ""
    rate = f"{data.tokens_per_s:.1f} tok/s" if data.tokens_per_s else ""
    parts = [stamp, data.method, data.route, data.model or "-", str(data.status), tokens, rate,
             f"{data.seconds:.2f}s"]
    line = "  ".join(p for p in parts if p)
    if data.error and data.status >= 400:
        line += f"  {data.error}"
    print(line, flush=True)

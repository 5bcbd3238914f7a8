"""A model across machines (llama.cpp RPC): speed, load time, and what each generated token sends.

1. Tokens/s (wall clock as the caller sees the streamed text: tokens after the first / time after the
   first) and load time (wall clock around `load()`), same model, prompt, greedy sampling and seed,
   n_ctx 1024, 128 tokens: in-process `Engine`; a `ChildEngine` without workers (the child-process
   cost alone); 1 and 2 loopback `camelid worker`s (each `--threads 1`), planned and loaded as the
   app does (`with_workers`, `plan_params`, `engine_for`). Rounds alternate between the setups.
2. Network per token: a counting TCP proxy sits between the client and each worker (RPC port P and
   status port P+1). It parses the client->worker framing (`cmd:u8 | size:u64 le | payload`,
   ggml-rpc.cpp of llama-cpp-python 0.3.36) and counts commands by name and bytes both ways, from
   the first streamed token to the end of the reply (the load and the prompt are not counted).
   A command the client waits on for a reply is a round trip; the others are one-way.
3. The probe's round-trip latency (one HELLO) on loopback, straight to a worker and through the proxy.

Run: .venv/bin/python bench/bench_cluster.py [MODEL.gguf]   (writes its section of docs/BENCHMARKS.md)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_line, table, update_section

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ROUNDS = int(os.environ.get("CAMELID_BENCH_ROUNDS", "3"))
MAX_TOKENS = 128
N_CTX = 1024
PROBES = 20
MESSAGES = [{"role": "user", "content": "Write a long, detailed story about a camel crossing the Sahara "
                                        "desert, with many characters and places."}]

#: enum rpc_cmd in ggml-rpc.cpp (llama-cpp-python 0.3.36), by value.
RPC_COMMANDS = ["ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "FREE_BUFFER",
                "BUFFER_CLEAR", "SET_TENSOR", "SET_TENSOR_HASH", "GET_TENSOR", "COPY_TENSOR",
                "GRAPH_COMPUTE", "GET_DEVICE_MEMORY", "INIT_TENSOR", "GET_ALLOC_SIZE", "HELLO",
                "DEVICE_COUNT", "GRAPH_RECOMPUTE", "MEMSET_TENSOR"]
#: The commands the server answers (rpc_serve_client): the client waits for these, a round trip each.
REPLIED = {"ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "SET_TENSOR_HASH",
           "GET_TENSOR", "COPY_TENSOR", "GET_DEVICE_MEMORY", "GET_ALLOC_SIZE", "HELLO", "DEVICE_COUNT"}


#: sizeof(rpc_tensor) (packed), where its name is, and a GET_TENSOR request (tensor, offset, size).
RPC_TENSOR = 296
RPC_TENSOR_NAME = 228
GET_TENSOR_REQ = RPC_TENSOR + 16


def command_name(cmd: int) -> str:
    return RPC_COMMANDS[cmd] if cmd < len(RPC_COMMANDS) else f"CMD_{cmd}"


# -- workers -------------------------------------------------------------------------------------


def free_port_pair() -> int:
    """A port P with P+1 free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def start_worker() -> tuple[subprocess.Popen, int]:
    port = free_port_pair()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli.worker", "--port", str(port), "--threads", "1",
                             "--json"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the 'ready' JSON line, printed before llama.cpp listens
    if not line:
        raise RuntimeError("a worker ended before it was ready")
    ready = json.loads(line)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ready["port"]), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise RuntimeError("a worker never listened")
    # Keep reading its JSON lines so the pipe never fills.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    time.sleep(0.3)  # the knock above is still being let go by the server (one client at a time)
    return proc, int(ready["port"])


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the counting proxy --------------------------------------------------------------------------


class CountingProxy:
    """Forwards 127.0.0.1:P -> the worker's RPC port and P+1 -> its status port, counting RPC traffic.

    Thread per direction per connection; the client->worker direction is parsed as RPC requests.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.lock = threading.Lock()
        self.reset()
        self.port = free_port_pair()
        self._listeners = []
        for offset in (0, 1):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port + offset))
            sock.listen(8)
            self._listeners.append(sock)
            threading.Thread(target=self._accept, args=(sock, target_port + offset, offset == 0),
                             daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self.lock:
            self.sent = 0  # client -> worker bytes
            self.received = 0  # worker -> client bytes
            self.commands: Counter[str] = Counter()
            self.command_bytes: Counter[str] = Counter()  # header + payload per command kind
            self.tensors: Counter[tuple[str, str]] = Counter()  # (SET_TENSOR | GET_TENSOR, name)
            self.tensor_bytes: Counter[tuple[str, str]] = Counter()  # their data bytes

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"sent": self.sent, "received": self.received, "commands": dict(self.commands),
                    "command_bytes": dict(self.command_bytes),
                    "tensors": [[c, n, v, self.tensor_bytes[(c, n)]] for (c, n), v in self.tensors.items()]}

    def _tensor(self, cmd: str, size: int, peek: bytes) -> None:
        """Count a SET_TENSOR / GET_TENSOR by the tensor's name and its data bytes (lock held)."""
        name = peek[RPC_TENSOR_NAME:RPC_TENSOR_NAME + 64].split(b"\0")[0].decode("utf-8", "replace")
        if name.count("#") >= 2:  # a copy between backends: "RPC0[host:port]#embd#0" -> "embd"
            name = name.split("#")[1]
        if cmd == "SET_TENSOR":
            data = size - RPC_TENSOR - 1 - 8  # descriptor, cache flag, offset
        else:
            (data,) = struct.unpack_from("<Q", peek, RPC_TENSOR + 8) if len(peek) >= GET_TENSOR_REQ else (0,)
        self.tensors[(cmd, name)] += 1
        self.tensor_bytes[(cmd, name)] += data

    def _accept(self, listener: socket.socket, target: int, rpc: bool) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, rpc, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, rpc, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rpc: bool, to_worker: bool) -> None:
        header = bytearray()
        peek = bytearray()  # the start of a SET_TENSOR / GET_TENSOR payload: the tensor's descriptor
        peek_need = 0
        size = 0
        remaining = 0  # payload bytes of the current request still to pass
        current = ""
        try:
            while True:
                chunk = src.recv(1 << 20)
                if not chunk:
                    break
                if rpc:
                    with self.lock:
                        if to_worker:
                            self.sent += len(chunk)
                            i = 0
                            while i < len(chunk):
                                if remaining:
                                    take = min(remaining, len(chunk) - i)
                                    if len(peek) < peek_need:
                                        peek += chunk[i:i + min(take, peek_need - len(peek))]
                                        if len(peek) == peek_need:
                                            self._tensor(current, size, bytes(peek))
                                    remaining -= take
                                    i += take
                                    continue
                                take = min(9 - len(header), len(chunk) - i)
                                header += chunk[i:i + take]
                                i += take
                                if len(header) == 9:
                                    cmd, size = struct.unpack("<BQ", bytes(header))
                                    header.clear()
                                    current = command_name(cmd)
                                    self.commands[current] += 1
                                    self.command_bytes[current] += 9 + size
                                    remaining = size
                                    peek.clear()
                                    peek_need = (min(size, GET_TENSOR_REQ) if current in ("SET_TENSOR", "GET_TENSOR")
                                                 and size >= RPC_TENSOR else 0)
                        else:
                            self.received += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        for sock in self._listeners:
            sock.close()


# -- one setup: load, one greedy reply, unload ----------------------------------------------------


def run_once(model: Path, setup: str, params: Any, plan: Any, hardware: Any,
             proxies: list[CountingProxy] | None = None) -> dict[str, Any]:
    from app.core.chat import Engine, SamplingSettings
    from app.core.cluster.child import ChildEngine
    from app.core.cluster.machines import engine_for

    greedy = SamplingSettings(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                              max_tokens=MAX_TOKENS, seed=1)
    if setup == "local":
        engine: Any = Engine()
    elif setup == "child":
        engine = ChildEngine(setup=None, label="this machine")
    else:
        engine = engine_for(hardware)
    started = time.perf_counter()
    engine.load(model, params, plan=plan)
    load_s = time.perf_counter() - started
    times: list[float] = []

    def on_text(piece: str) -> None:
        times.append(time.perf_counter())
        if len(times) == 1 and proxies:
            for p in proxies:  # count generation only: not the load, the prompt or the first token
                p.reset()

    try:
        reply = engine.chat(MESSAGES, greedy, on_text=on_text)
        after = [p.snapshot() for p in proxies or []]
    finally:
        engine.unload()
    n = reply.stats.completion_tokens
    return {"load_s": load_s, "rate": (n - 1) / (times[-1] - times[0]), "tokens": n,
            "ttft_s": times[0] - started - load_s, "text": reply.text, "net": after,
            "stop": reply.stats.stop_reason}


def main() -> None:
    from app.core.chat.engine import plan_params
    from app.core.cluster.machines import with_workers
    from app.core.cluster.probe import probe
    from app.core.fit import LoadChoices
    from app.core.fit.speed import RPC_TRIPS_PER_DEVICE, plan_network_seconds
    from app.core.machine import detect

    model = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.environ.get("CAMELID_TEST_MODEL", DEFAULT_MODEL))
    local_hw = detect()
    local_params, local_plan, _ = plan_params(model, LoadChoices(n_ctx=N_CTX), hardware=local_hw)
    # The workers run llama.cpp's CPU backend without weight repacking: the local runs do the same,
    # so every setup computes with the same kernels.
    local_params = local_params.with_(use_extra_bufts=False)
    n_embd = int(local_plan.model.get("n_embd") or 0)
    n_vocab = int(local_plan.model.get("n_vocab") or 0)

    workers = [start_worker() for _ in range(2)]
    proxies: list[CountingProxy] = []
    try:
        direct = [f"127.0.0.1:{port}" for _, port in workers]
        setups: dict[str, tuple[Any, Any, Any]] = {"local": (local_params, None, local_hw),
                                                   "child": (local_params, None, local_hw)}
        for k in (1, 2):
            hw = with_workers(local_hw, direct[:k])
            params, plan, _ = plan_params(model, LoadChoices(n_ctx=N_CTX), hardware=hw)
            setups[f"{k}w"] = (params, plan, hw)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
        run_once(model, "local", local_params, None, local_hw)  # warm-up (page cache, first imports)
        load_before = os.getloadavg()[0]
        for r in range(ROUNDS):
            order = list(setups) if r % 2 == 0 else list(reversed(setups))
            for name in order:
                params, plan, hw = setups[name]
                out = run_once(model, name, params, plan, hw)
                results[name].append(out)
                print(f"round {r + 1} {name}: load {out['load_s']:.2f} s, {out['rate']:.1f} tokens/s, "
                      f"{out['tokens']} tokens ({out['stop']})", flush=True)
                time.sleep(0.3)  # let the worker let go of the last client

        load_after = os.getloadavg()[0]
        # Latency: the probe's HELLO round trip, straight to a worker.
        latency = []
        for _ in range(PROBES):
            latency.append(probe(direct[0], timeout=5, status=False).latency_s)
            time.sleep(0.05)

        # Network per token, through the counting proxies.
        proxies = [CountingProxy(port) for _, port in workers]
        latency_proxy = []
        for _ in range(PROBES):
            latency_proxy.append(probe(proxies[0].endpoint, timeout=5, status=False).latency_s)
            time.sleep(0.05)
        counted: dict[int, dict[str, Any]] = {}
        for k in (1, 2):
            hw = with_workers(local_hw, [p.endpoint for p in proxies[:k]])
            params, plan, _ = plan_params(model, LoadChoices(n_ctx=N_CTX), hardware=hw)
            out = run_once(model, f"{k}w", params, plan, hw, proxies[:k])
            out["plan"] = [(d.name, d.layers, bool(d.output)) for d in plan.devices if d.kind == "rpc"]
            direct_plan, direct_hw = setups[f"{k}w"][1], setups[f"{k}w"][2]  # probed straight, not via the proxy
            out["predicted_net_s"] = plan_network_seconds(direct_plan, direct_hw)
            out["probed_s"] = [r.latency_s for r in direct_hw.remote]
            counted[k] = out
            print(f"counted {k}w: {out['rate']:.1f} tokens/s, {json.dumps(out['net'])}", flush=True)
            time.sleep(0.3)
    finally:
        for p in proxies:
            p.close()
        for proc, _ in workers:
            stop_worker(proc)

    same = all(r["text"] == results["local"][0]["text"] for rs in results.values() for r in rs)
    write(model, results, counted, latency, latency_proxy, n_embd, n_vocab, RPC_TRIPS_PER_DEVICE, same,
          (load_before, load_after))


def write(model: Path, results: dict[str, list[dict[str, Any]]], counted: dict[int, dict[str, Any]],
          latency: list[float], latency_proxy: list[float], n_embd: int, n_vocab: int, trips_model: int,
          same: bool, loadavg: tuple[float, float]) -> None:
    labels = {"local": "local, in-process `Engine`",
              "child": "local, `ChildEngine` (child process, no workers)",
              "1w": "1 loopback worker (`ChildEngine`)", "2w": "2 loopback workers (`ChildEngine`)"}
    base = statistics.median(r["rate"] for r in results["local"])
    child = statistics.median(r["rate"] for r in results["child"])
    rows = []
    for name, rs in results.items():
        rate = statistics.median(r["rate"] for r in rs)
        extra = f"{1000 / rate - 1000 / child:+.2f} ms" if name.endswith("w") else ""
        rows.append([labels[name], f"{rate:.1f}", f"{min(r['rate'] for r in rs):.1f} to {max(r['rate'] for r in rs):.1f}",
                     f"{rate / base:.2f}", extra,
                     f"{statistics.median(r['load_s'] for r in rs):.2f} s",
                     f"{statistics.median(r['ttft_s'] for r in rs) * 1000:.0f} ms",
                     statistics.median(r["tokens"] for r in rs)])

    lo, hi = min(r["rate"] for r in results["child"]), max(r["rate"] for r in results["child"])
    inside = [n for n in ("1w", "2w") if lo <= statistics.median(r["rate"] for r in results[n]) <= hi]
    spread = max(max(r["rate"] for r in rs) / min(r["rate"] for r in rs) for rs in results.values())
    medians = [statistics.median(r["rate"] for r in rs) for rs in results.values()]
    gap = max(medians) / min(medians)
    spread_line = (f"The rounds of one setup spread by up to {spread:.2f}x (fastest / slowest), more than the "
                   f"medians differ ({gap:.2f}x): on this shared machine the setups' speeds do not differ "
                   "measurably." if spread > gap else
                   f"The rounds of one setup spread by up to {spread:.2f}x; the medians differ by {gap:.2f}x.")
    noise = ("; " + " and ".join({"1w": "1 worker", "2w": "2 workers"}[n] for n in inside)
             + " within the child's range of rounds, i.e. within the noise") if inside else ""
    faster = [n for n in ("1w", "2w") if statistics.median(r["rate"] for r in results[n]) > 1.1 * max(base, child)]
    if faster:
        spread_line += (" Where a worker row is faster than a local one, it is not the split: with every layer on "
                        "the workers, the model computes on their single threads (the client embeds the token "
                        "and samples), and on this loaded 2-core machine one thread per process most likely "
                        "loses less to other processes than the client's threads that wait on each other.")
    net_rows = []
    cmd_rows = []
    trips_seen: list[float] = []
    for k, out in counted.items():
        steps = out["tokens"] - 1  # decodes after the first token
        for w, net in enumerate(out["net"]):
            trips = sum(v for c, v in net["commands"].items() if c in REPLIED) / steps
            trips_seen.append(trips)
            output = w == len(out["net"]) - 1  # the plan puts the output layer on the last worker
            assumed = 2 * n_embd * 4 + (n_vocab * 4 if output else 0)
            net_rows.append([f"{k} worker{'s' if k > 1 else ''}: worker {w + 1}{' (output)' if output else ''}",
                             f"{net['sent'] / steps:,.0f}", f"{net['received'] / steps:,.0f}",
                             f"{(net['sent'] + net['received']) / steps:,.0f}", f"{assumed:,}",
                             f"{sum(net['commands'].values()) / steps:.2f}", f"{trips:.2f}", trips_model])
            for cmd in sorted(net["commands"], key=lambda c: -net["commands"][c]):
                cmd_rows.append([f"{k}w / worker {w + 1}", f"`{cmd}`",
                                 "round trip" if cmd in REPLIED else "one-way",
                                 f"{net['commands'][cmd] / steps:.2f}",
                                 f"{net['command_bytes'][cmd] / net['commands'][cmd]:,.0f}"])
    tensor_lines = []
    for k, out in counted.items():
        steps = out["tokens"] - 1
        for w, net in enumerate(out["net"]):
            parts = [f"{'set' if c == 'SET_TENSOR' else 'get'} `{n}` {v / steps:.2f}x {b / max(v, 1):,.0f} B"
                     for c, n, v, b in sorted(net["tensors"], key=lambda t: (t[0] != "SET_TENSOR", t[1]))]
            tensor_lines.append(f"- {k}w / worker {w + 1}: " + "; ".join(parts))
    activations = 2 * n_embd * 4
    logits = n_vocab * 4
    holds = True
    for t in trips_seen:
        holds = holds and abs(t - trips_model) < 0.5
    measured_trips = statistics.median(trips_seen) if trips_seen else float("nan")
    plan_lines = "; ".join(
        f"{k} worker{'s' if k > 1 else ''}: " + ", ".join(f"{n} {layers} layers{' + output' if out_ else ''}"
                                                          for n, layers, out_ in out["plan"])
        for k, out in counted.items())
    lat = statistics.median(latency) * 1e6
    lat_p = statistics.median(latency_proxy) * 1e6
    counted_rates = ", ".join(f"{k} worker{'s' if k > 1 else ''} {out['rate']:.1f} tokens/s"
                              for k, out in counted.items())
    predicted = ", ".join(f"{k} worker{'s' if k > 1 else ''} {out['predicted_net_s'] * 1000:.2f} ms (probed "
                          + " / ".join(f"{x * 1e6:.0f}" for x in out["probed_s"]) + " µs)"
                          for k, out in counted.items())
    verdict = (f"**`RPC_TRIPS_PER_DEVICE = {trips_model}` holds**" if holds else
               f"**`RPC_TRIPS_PER_DEVICE = {trips_model}` does not hold: measured {measured_trips:.2f} "
               "round trips per remote device per token**")
    text = f"""`bench/bench_cluster.py`: {model.name}, n_ctx {N_CTX}, greedy (top_k 1, seed 1), the same \
prompt, {MAX_TOKENS} tokens, {ROUNDS} rounds alternating between the setups (medians). Tokens/s are wall \
clock as the caller sees the streamed text (tokens after the first / time after the first); load time is \
wall clock around `load()` (a `ChildEngine`'s includes starting the child and registering the workers); \
time to first token is after the load. The workers run on this machine (127.0.0.1), each \
`camelid worker --threads 1`; the client keeps its default threads. Every setup computes with llama.cpp's \
CPU kernels without weight repacking (the local runs with `use_extra_bufts=False`, as the workers do). \
{machine_line()}

{table(["setup", "tokens/s (wall, after the first)", "range", "vs in-process", "time per token vs child",
        "load time", "time to first token", "tokens"], rows)}

On a 2-core machine the workers compete with the client for the cores, so the loopback numbers measure \
the protocol's overhead, not a speed-up: a real split puts the workers' layers on other machines' \
cores or GPUs. The in-process and child rows differ only by the child process (the streamed text \
crosses a pipe); the worker rows add llama.cpp's RPC client, the loopback network and the workers' \
own threads ("time per token vs child" is what that adds to each token{noise}). {spread_line} Same reply text in every run: {"yes" if same else "no"}. Plan: {plan_lines}.

Network per generated token, measured by a counting TCP proxy between the client and each worker \
(it parses the client->worker requests, `cmd:u8 | size:u64 le | payload`), from the first streamed \
token to the end of the reply ({", ".join(str(o["tokens"] - 1) for o in counted.values())} decodes; the \
load and the prompt are not counted). A "round trip" is a command the client waits on for a reply \
(ggml-rpc.cpp); the others are one-way and travel in the same stream. Speed through the proxy: \
{counted_rates}.

{table(["worker", "bytes sent / token", "bytes received / token", "both ways", "model's bytes",
        "commands / token", "round trips / token", "model's trips"], net_rows)}

{table(["worker", "command", "kind", "per token", "bytes each (with its 9-byte header)"], cmd_rows)}

What the tensors are (per token, by llama.cpp's tensor names; bytes are the tensor's data, without \
each request's {RPC_TENSOR}-byte tensor descriptor and its framing):

{chr(10).join(tensor_lines)}

The fit engine's model (`app/core/fit/speed.py`) assumes {trips_model} round trips per remote device \
per token and 2 x n_embd x 4 = {activations:,} bytes of activations (n_embd {n_embd}), plus the logits \
n_vocab x 4 = {logits:,} bytes (n_vocab {n_vocab}) from the device holding the output layer. \
{verdict}. The only command the client waits on during generation is `GET_TENSOR` (the activations the \
next device needs, or the logits from the device holding the output layer); the inputs (`SET_TENSOR`) \
and the graph (`GRAPH_COMPUTE` for the first decode, then the 13-byte `GRAPH_RECOMPUTE` while llama.cpp \
reuses the graph) are one-way, queued on the same connection. The bytes are a few kB per device per \
token above the model's activations (each request carries a {RPC_TENSOR}-byte tensor descriptor, and the \
positions, KV indices and attention mask travel too; the mask grows with the KV cells in use): small next to the logits, and next to a round trip on a real \
network. The plan's predicted network time per token (from the single probe each worker got \
when it was added, and {trips_model} trips): {predicted}.

Round-trip latency from the probe (one `HELLO` on a fresh connection, {PROBES} probes, median): \
**{lat:.0f} µs** straight to a loopback worker; {lat_p:.0f} µs through the counting proxy, whose first \
request on a connection also waits for the proxy to connect to the worker. The machine was shared while \
this ran (load average {loadavg[0]:.1f} before the timed rounds, {loadavg[1]:.1f} after).
"""
    update_section("cluster", "Models across machines (RPC): speed, load time, network per token", text)
    print(text)


if __name__ == "__main__":
    main()

"""The play server: one page, a JSON status, and a WebSocket per tab, each tab its own session.

Routes (nothing else is served; the client never names a file, only an embodiment from the list it was given):
    GET /             the page (page.html beside this file)
    GET /status       {"frames", "fps", "embodiment", "sessions", "embodiments"}
    GET /embodiments  the playable embodiments with their frame rates
    WS  /ws           the session protocol below

Client -> server (JSON text messages):
    {"type": "start", "embodiment": name, "seed": int | null, "guidance": float | null, "simulator": bool}
    {"type": "step", "keys": [KeyboardEvent.code, ...], "pad": {"axes": [...], "buttons": [...]} | null, "key_t": t}
    {"type": "guidance", "value": float}     {"type": "reset"}     {"type": "download"}
Server -> client:
    {"type": "hello", "embodiments": [...]}
    {"type": "started", "embodiment", "start", "seed", "frame_rate", "controls", "frame": data URL, "native": [...],
     "simulator": data URL | null, "simulator_note": why there is none}
    {"type": "frame", "index", "frame": data URL, "native": [[...]], "keys": [...], "ms": compute time, "key_t": echoed,
     "simulator": the simulator's frame under the same actions | null}
    {"type": "download", "gif": base64, "json": text}
    {"type": "error", "message": one line}
A closed tab ends its session (its frames and caches are dropped); past MAX_SESSIONS tabs a new one is refused.
Model calls are serialized by one lock: two tabs share the CPU, each keeps its own caches and noise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
import time
from collections import deque
from pathlib import Path

from fastapi import FastAPI, WebSocket, WebSocketDisconnect  # module level: FastAPI resolves the routes' annotations here
from fastapi.responses import HTMLResponse, JSONResponse

from unified_action.errors import UnifiedActionError
from unified_action.play.session import Player, PlaySession, png

PAGE = Path(__file__).with_name("page.html")
MAX_SESSIONS = 4  # tabs at once; each holds its own KV caches and recorded frames
MAX_KEYS = 16  # keys held at once that a step message may name
MAX_MESSAGE = 64 * 1024  # bytes: a step message is a few hundred


class ClientError(UnifiedActionError):
    """A message from the page that does not fit the protocol: answered with one line, the session goes on."""


def data_url(frame) -> str:
    return "data:image/png;base64," + base64.b64encode(png(frame)).decode()


def _maybe_url(frame) -> str | None:
    return None if frame is None else data_url(frame)


def _keys(value) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_KEYS or not all(isinstance(k, str) and 0 < len(k) <= 32 for k in value):
        raise ClientError(f"step: keys: expected a list of at most {MAX_KEYS} key names")
    return value


def _pad(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ClientError("step: pad: expected {axes: [...], buttons: [...]} or null")
    out = {}
    for k in ("axes", "buttons"):
        v = value.get(k, [])
        if not isinstance(v, list) or len(v) > 32 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            raise ClientError(f"step: pad.{k}: expected at most 32 finite numbers")
        out[k] = [max(-1.0, min(1.0, float(x))) for x in v]
    return out


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ClientError(f"{what}: expected a number, got {str(value)[:20]}")
    return float(value)


class Hub:
    """The sessions of the open tabs and the counters /status reports."""

    def __init__(self, player: Player):
        self.player = player
        self.lock = threading.Lock()  # one model call at a time
        self.sessions: dict[int, PlaySession | None] = {}
        self.frames = 0
        self.times: deque[float] = deque(maxlen=240)  # when recent frames were made, for frames/s
        self.embodiment: str | None = None

    def fps(self) -> float:
        now = time.monotonic()
        recent = [t for t in self.times if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def status(self) -> dict:
        return {"frames": self.frames, "fps": round(self.fps(), 2), "embodiment": self.embodiment,
                "sessions": len(self.sessions), "embodiments": list(self.player.embodiments)}

    def handle(self, sid: int, msg: dict) -> dict:
        """One client message -> the reply (run in a worker thread: model calls block)."""
        kind = msg.get("type")
        if kind == "start":
            name = msg.get("embodiment")
            if name not in self.player.embodiments:
                raise ClientError(f"start: embodiment: expected one of {', '.join(self.player.embodiments)}")
            seed = msg.get("seed")
            seed = None if seed is None else int(_number(seed, "start: seed")) % 2**31
            with self.lock:
                s = self.player.session(name, seed, simulator=bool(msg.get("simulator", False)))
            if msg.get("guidance") is not None:
                s.set_guidance(_number(msg["guidance"], "start: guidance"))
            old = self.sessions.get(sid)
            if old is not None:
                old.close()
            self.sessions[sid] = s
            self.embodiment = name
            return {"type": "started", "embodiment": name, "start": s.key, "seed": s.seed, "frame_rate": s.emb.frame_rate,
                    "controls": s.controls.describe(), "frame": data_url(s.context[-1]), "guidance": s.guidance,
                    "native": s.controls.neutral_native().tolist(), "context_frames": len(s.context),
                    "simulator": _maybe_url(s.sim_frame), "simulator_note": s.sim_note}
        s = self.sessions.get(sid)
        if s is None:
            raise ClientError(f"{kind}: no session: send start first")
        if kind == "step":
            keys, pad = _keys(msg.get("keys", [])), _pad(msg.get("pad"))
            t0 = time.perf_counter()
            with self.lock:
                frame, native = s.step(keys, pad)
            ms = (time.perf_counter() - t0) * 1000
            self.frames += 1
            self.times.append(time.monotonic())
            self.embodiment = s.emb.name
            return {"type": "frame", "index": s.stream.frames, "frame": data_url(frame), "native": native.tolist(),
                    "keys": keys, "ms": round(ms, 2), "key_t": msg.get("key_t"),
                    "simulator": _maybe_url(s.sim_frame) if s.sim is not None else None}
        if kind == "guidance":
            s.set_guidance(_number(msg.get("value"), "guidance: value"))
            return {"type": "guidance", "value": s.guidance}
        if kind == "reset":
            with self.lock:
                s.reset()
            return {"type": "reset", "frame": data_url(s.context[-1]), "native": s.controls.neutral_native().tolist(),
                    "simulator": _maybe_url(s.sim_frame)}
        if kind == "download":
            return {"type": "download", "gif": base64.b64encode(s.gif()).decode(), "json": s.record(),
                    "name": f"{s.emb.name}_seed{s.seed}"}
        raise ClientError(f"type: expected start, step, guidance, reset or download, got {str(kind)[:20]}")


def create_app(player: Player):
    """The ASGI app serving `player`."""
    hub = Hub(player)
    app = FastAPI(title="uact play", docs_url=None, redoc_url=None, openapi_url=None)  # only our own routes
    app.state.hub = hub
    page = PAGE.read_text()
    counter = iter(range(1, 2**62))

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/status")
    def status() -> JSONResponse:
        return JSONResponse(hub.status())

    @app.get("/embodiments")
    def embodiments() -> JSONResponse:
        return JSONResponse([e.to_json() for e in player.embodiments.values()])

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        if len(hub.sessions) >= MAX_SESSIONS:
            await socket.send_json({"type": "error", "message": f"{MAX_SESSIONS} tabs are playing already: close one "
                                                                "and reload"})
            await socket.close(code=1013)
            return
        sid = next(counter)
        hub.sessions[sid] = None
        try:
            await socket.send_json({"type": "hello", "embodiments": [e.to_json() for e in player.embodiments.values()]})
            while True:
                text = await socket.receive_text()
                try:
                    if len(text) > MAX_MESSAGE:
                        raise ClientError(f"message of {len(text)} bytes, at most {MAX_MESSAGE}")
                    try:
                        msg = json.loads(text)
                    except ValueError:
                        raise ClientError("expected a JSON message") from None
                    if not isinstance(msg, dict):
                        raise ClientError("expected a JSON object")
                    reply = await asyncio.to_thread(hub.handle, sid, msg)
                except UnifiedActionError as e:
                    reply = {"type": "error", "message": str(e)}
                await socket.send_json(reply)
        except WebSocketDisconnect:
            pass
        finally:
            gone = hub.sessions.pop(sid, None)  # the tab is gone: its caches, frames and simulator go with it
            if gone is not None:
                await asyncio.to_thread(gone.close)

    return app


def bind(host: str, port: int):
    """The listening socket, or one line saying why not (a port in use, a host that is not this machine's)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; one listened on is not
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError as e:
        sock.close()
        why = "is in use (another server listens there): pick another with --port" if e.errno == 98 else \
            f"cannot be bound ({e.strerror})"
        raise UnifiedActionError(f"--port: {port} on {host} {why}") from None
    sock.setblocking(False)
    return sock


def serve(player: Player, host: str = "127.0.0.1", port: int = 8000, ready=None) -> None:
    """Serve until Ctrl-C (uvicorn stops cleanly on SIGINT). `ready(url)` is called once the port is bound."""
    import uvicorn

    sock = bind(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}/"
    config = uvicorn.Config(create_app(player), log_level="warning", timeout_graceful_shutdown=2, ws_max_size=MAX_MESSAGE)
    if ready is not None:
        ready(url)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C it had caught: stopping is asked for
        pass
    finally:
        sock.close()

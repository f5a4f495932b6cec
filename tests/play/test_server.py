"""The play server through a real WebSocket client: sessions per tab, /status, bad messages, closed tabs; and the
`uact play` refusals, one line each."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest
from play.test_controls import synthetic_episodes
from support import run_cli

from unified_action.play.session import Player
from unified_action.tokenization import Registry


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@contextmanager
def ws(base: str):
    """A WebSocket client: a tab, greeted."""
    from websockets.sync.client import connect

    with connect(base.replace("http", "ws") + "/ws", open_timeout=30) as c:
        hello = json.loads(c.recv(timeout=30))
        assert hello["type"] == "hello" and [e["name"] for e in hello["embodiments"]] == ["carracing"]
        yield c


def ask(c, msg: dict) -> dict:
    c.send(json.dumps(msg))
    return json.loads(c.recv(timeout=120))


@pytest.mark.slow
def test_two_tabs_each_their_own_session_and_status(server):
    with ws(server) as a, ws(server) as b:
        two_tabs(server, a, b)


def two_tabs(server, a, b):
    sa = ask(a, {"type": "start", "embodiment": "carracing", "seed": 3})
    sb = ask(b, {"type": "start", "embodiment": "carracing", "seed": 3})
    assert sa["type"] == sb["type"] == "started" and sa["start"] == sb["start"] and sa["frame_rate"] == 10.0
    assert [c["slot"] for c in sa["controls"]] == ["vehicle.steer", "vehicle.throttle", "vehicle.brake"]
    fa = [ask(a, {"type": "step", "keys": ["ArrowRight", "ArrowUp"], "key_t": 1.5}) for _ in range(3)]
    fb = [ask(b, {"type": "step", "keys": ["ArrowLeft", "ArrowDown"], "pad": None}) for _ in range(3)]
    assert [f["index"] for f in fa] == [1, 2, 3] and fa[0]["key_t"] == 1.5 and fa[0]["frame"].startswith("data:image/png")
    assert fa[-1]["native"][-1][0] > 0 and fb[-1]["native"][-1][0] < 0  # steering right vs left
    status = get(server + "/status")
    assert status["frames"] == 6 and status["sessions"] == 2 and status["embodiment"] == "carracing"
    assert isinstance(status["fps"], float)
    d = ask(a, {"type": "download"})
    assert d["type"] == "download" and len(json.loads(d["json"])["actions"]) == 3
    a.close()  # a closed tab: its session is dropped
    for _ in range(100):
        if get(server + "/status")["sessions"] == 1:
            break
        time.sleep(0.05)
    assert get(server + "/status")["sessions"] == 1


@pytest.mark.slow
def test_bad_messages_are_one_line_and_the_session_goes_on(server):
    with ws(server) as c:
        bad_messages(c)
    with urllib.request.urlopen(server + "/", timeout=30) as r:
        page = r.read().decode()
    assert "image-rendering: pixelated" in page
    for path in ("/page.html", "/../pyproject.toml", "/docs", "/openapi.json"):  # only its own routes
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server + path, timeout=30)


def bad_messages(c):
    assert ask(c, {"type": "step", "keys": []})["message"] == "step: no session: send start first"
    assert "embodiment: expected one of carracing" in ask(c, {"type": "start", "embodiment": "../../etc/passwd"})["message"]
    c.send("not json")
    assert json.loads(c.recv(timeout=30)) == {"type": "error", "message": "expected a JSON message"}
    assert ask(c, {"type": "start", "embodiment": "carracing", "seed": 0})["type"] == "started"
    assert "keys: expected a list" in ask(c, {"type": "step", "keys": "ArrowUp"})["message"]
    assert "pad.axes: expected at most 32 finite numbers" in ask(c, {"type": "step", "keys": [], "pad": {"axes": ["x"]}})["message"]
    assert ask(c, {"type": "guidance", "value": 2.0}) == {"type": "guidance", "value": 2.0}
    assert "guidance: expected a number in [0, 10]" in ask(c, {"type": "guidance", "value": 99})["message"]
    assert ask(c, {"type": "step", "keys": ["ArrowUp"]})["index"] == 1
    assert ask(c, {"type": "reset"})["type"] == "reset"
    assert ask(c, {"type": "step", "keys": []})["index"] == 1


def test_the_same_keys_give_the_same_frames_and_other_keys_others(player):
    """Reset replays the same start and noise; another key sequence gives other frames."""
    s = player.session("carracing", seed=1)
    right = [s.step({"ArrowRight", "ArrowUp"})[0] for _ in range(4)]
    s.reset()
    again = [s.step({"ArrowRight", "ArrowUp"})[0] for _ in range(4)]
    s.reset()
    left = [s.step({"ArrowLeft", "ArrowDown"})[0] for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(right, again))
    assert not np.array_equal(right[-1], left[-1])
    assert s.gif()[:6] == b"GIF89a"


def test_refusals_are_one_line(monkeypatch, capsys, evalsetup, tmp_path):
    s = evalsetup
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        code, _, err = run_cli(monkeypatch, capsys, "play", "--model", s["export"], "--registry", s["registry"].root,
                               "--data", s["carracing"].root, "--port", port)
    finally:
        busy.close()
    assert code == 2 and err == f"error: --port: {port} on 127.0.0.1 is in use (another server listens there): pick another with --port\n"

    other = Registry(tmp_path / "other")  # carracing fitted on other episodes: another hash
    card = s["registry"].load("carracing").card
    other.register(card, synthetic_episodes(card))
    code, _, err = run_cli(monkeypatch, capsys, "play", "--model", s["export"], "--registry", other.root,
                           "--data", s["carracing"].root, "--port", 0)
    assert code == 2 and err.count("\n") == 1 and "tokenizer 'carracing'" in err and "the model was trained with" in err

    code, _, err = run_cli(monkeypatch, capsys, "play", "--model", s["export"], "--registry", s["registry"].root,
                           "--data", s["ale_pong"].root, "--port", 0)
    assert code == 2 and err.count("\n") == 1 and "dataset of 'ale_pong', which the model was not trained with" in err

    with pytest.raises(Exception, match="no dataset of an embodiment the model knows"):
        Player(s["export"], s["registry"], [])
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "play")
    assert code == 2 and err == ("error: --model: runs/demo/pretrain/export: no export there; run `uact demo` first, "
                                 "or pass --model EXPORT_DIR\n")


@pytest.mark.slow
def test_tabs_past_the_limit_are_refused_in_one_line(server):
    from websockets.sync.client import connect

    from unified_action.play.server import MAX_SESSIONS

    url = server.replace("http", "ws") + "/ws"
    with ExitStack() as stack:
        tabs = [stack.enter_context(connect(url, open_timeout=30)) for _ in range(MAX_SESSIONS)]
        for t in tabs:
            assert json.loads(t.recv(timeout=30))["type"] == "hello"
        with connect(url, open_timeout=30) as extra:
            msg = json.loads(extra.recv(timeout=30))
            assert msg == {"type": "error", "message": f"{MAX_SESSIONS} tabs are playing already: close one and reload"}


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly(evalsetup):
    """`uact play` in its own process: it serves, and SIGINT (Ctrl-C) stops it with exit 0 and no traceback."""
    import os
    import signal
    import subprocess
    import sys

    from support import ROOT

    s = evalsetup
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "unified_action.cli", "play", "--model", str(s["export"]), "--registry",
                             str(s["registry"].root), "--data", str(s["carracing"].root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("open "):
                url = line.split()[1]
                break
        assert url is not None, proc.stderr.read()
        assert get(url + "status")["sessions"] == 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err, err[-2000:]


@pytest.mark.slow
def test_the_simulator_beside_the_model(player):
    """A dataset recorded from its simulator: the simulator continues the episode under the same actions, from the
    session's last context frame (reproduced exactly), and back to it on reset."""
    s = player.session("carracing", seed=4, simulator=True)
    try:
        assert s.sim is not None and s.sim_note == ""
        assert np.array_equal(s.sim_frame, s.context[-1])
        for _ in range(3):
            frame, _ = s.step({"ArrowLeft", "ArrowUp"})
        assert s.sim_frame is not None and s.sim_frame.shape == frame.shape and not np.array_equal(s.sim_frame, s.context[-1])
        s.reset()
        assert np.array_equal(s.sim_frame, s.context[-1])
    finally:
        s.close()
    assert s.sim is None

"""`muppets serve` as a user runs it: the real command in a subprocess, bound to loopback, the key
taken from $MUPPETS_API_KEY, answering, then SIGTERM ends it after a graceful shutdown."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from muppets.cli.main import main
from tests.serve_helpers import call, save_classifier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_serves_with_the_key_from_the_environment(tiny_tokenizer, tmp_path):
    model = save_classifier(tmp_path / "model", tiny_tokenizer, ["the cat", "a dog ran"])
    port = free_port()
    argv = [sys.executable, "-m", "muppets", "serve", "--model", str(model), "--port", str(port)]
    argv += ["--threads", "1", "--max-inputs", "2"]
    env = {**os.environ, "MUPPETS_API_KEY": "env-key"}
    server = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "did not start"
            try:
                if call(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        key = {"Authorization": "Bearer env-key"}
        assert call(port, "GET", "/info")[0] == 401
        status, _, info = call(port, "GET", "/info", None, key)
        assert status == 200 and info["routes"] == ["classify", "embed"]
        assert info["limits"]["max_inputs"] == 2 and info["precision"] in ("fp32", "bf16")
        status, _, body = call(port, "POST", "/classify", {"inputs": ["the cat"]}, key)
        assert status == 200 and body["results"][0]["label"] in ("0", "1")
        assert call(port, "POST", "/classify", {"inputs": ["a"] * 3}, key)[0] == 413
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode()
    first = output.splitlines()[0]
    assert first.startswith(f"serve: {model} (/classify, /embed); precision: ")
    assert "Uvicorn running on http://127.0.0.1:" in output
    assert "Application shutdown complete." in output  # graceful, not killed


def test_impossible_options_are_one_line(tmp_path, cli_error, capsys):
    line = cli_error(["serve", "--model", str(tmp_path), "--max-queue", "0"])
    assert line == "muppets: error: max_queue must be >= 1, got 0"
    line = cli_error(["serve", "--model", str(tmp_path), "--precision", "fp16", "--device", "cpu"])
    assert "fp16: runs on a GPU only" in line
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "bearer token for every route but /health" in capsys.readouterr().out

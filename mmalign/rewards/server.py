"""Any reward over HTTP: ``mmalign serve-reward NAME`` serves it, a ``remote:HOST:PORT`` reward calls it.

Why: a large judge, or one whose dependencies clash with the trainer's, runs in its own process or
on its own GPU (as flow_grpo's reward servers do), and the training process sends it batches.

Routes: ``GET /card`` gives the reward's name, spec and card as JSON; ``POST /score`` takes samples
and prompts as safetensors (:mod:`mmalign.rewards.wire`) and answers with the scores the same way.
Bad input is answered 400 with the reward's own message, anything else 500. One model call runs at
a time, so a GPU model is never entered by two threads at once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from ..errors import MMAlignError
from .base import Reward
from .wire import decode_request, encode_output

MAX_REQUEST_BYTES = 2**31  # 2 GiB: a batch of 64 1024² fp32 images is 0.8 GiB


class RewardServer:
    """Serves ``reward`` on ``host:port`` (loopback unless told otherwise; port 0 picks a free one).
    ``max_batch_size`` caps what one request may send."""

    def __init__(self, reward: Reward, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 64):
        self.reward, self.max_batch_size = reward, max_batch_size
        self.requests = 0
        self._model_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def describe(self) -> dict:
        card = getattr(self.reward, "card", None)
        return {"name": self.reward.name, "spec": asdict(self.reward.spec), "card": card.to_dict() if card else None,
                "max_batch_size": self.max_batch_size}

    def score(self, body: bytes) -> bytes:
        try:
            samples, prompts = decode_request(body)
        except Exception as error:  # not safetensors, or no samples in it: the client's fault
            raise _BadRequest(f"the request is not mmalign's safetensors request ({type(error).__name__}: {error}); "
                              "send it with load_reward('remote:HOST:PORT').") from error
        if len(samples) > self.max_batch_size:
            raise _TooLarge(f"a batch of {len(samples)} exceeds this server's --max-batch-size {self.max_batch_size}; "
                            "send smaller batches (remote:...?batch_size=N).")
        with self._model_lock, torch.no_grad():
            self.requests += 1
            return encode_output(self.reward(samples, prompts))

    def serve_forever(self) -> None:
        self._serving = True
        self.httpd.serve_forever()

    def start(self) -> RewardServer:
        """Serve in a background thread (tests, notebooks); :meth:`close` stops it."""
        self._serving = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._serving:  # shutdown() waits for a serve_forever loop, forever if none ever ran
            self.httpd.shutdown()
            self._serving = False
        self.httpd.server_close()

    def __enter__(self) -> RewardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class _BadRequest(MMAlignError):
    pass


class _TooLarge(_BadRequest):
    pass


def _handler(server: RewardServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 300  # seconds a client may stall mid-request before its thread is freed

        def do_GET(self):
            if self.path.rstrip("/") != "/card":
                return self.reply_error(404, f"no route {self.path}; use GET /card or POST /score")
            self.reply(200, json.dumps(server.describe()).encode(), "application/json")

        def do_POST(self):
            if self.path.rstrip("/") != "/score":
                return self.reply_error(404, f"no route {self.path}; use GET /card or POST /score")
            header = self.headers.get("Content-Length") or "0"
            length = int(header) if header.isdigit() else 0
            if not 0 < length <= MAX_REQUEST_BYTES:
                return self.reply_error(400, f"a request body of {length} bytes; send 1 byte to 2 GiB of safetensors")
            body = self.rfile.read(length)
            try:
                self.reply(200, server.score(body), "application/octet-stream")
            except MMAlignError as error:
                self.reply_error(400, str(error))
            except Exception as error:  # the client gets a message, the server keeps serving
                self.reply_error(500, f"{type(error).__name__}: {error}")

        def reply(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if close:  # an unread request body must not be taken for the next request
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def reply_error(self, status: int, message: str) -> None:
            self.reply(status, json.dumps({"error": message}).encode(), "application/json", close=True)

        def log_message(self, format, *args):  # one quiet line per request is left to a proxy
            pass

    return Handler

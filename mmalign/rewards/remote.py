"""``remote:HOST:PORT``: a reward served by ``mmalign serve-reward``, called over HTTP in batches.

It scores as the served reward does, with its name, heads, mask and uncertainty; it is never
differentiable, since gradients do not cross the wire. An unreachable or silent server fails after
``timeout`` seconds with the fix, never hangs.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from ..errors import InvalidInputError, RemoteRewardError
from .base import Reward, RewardOutput, RewardSpec, concat_outputs
from .wire import decode_output, encode_request


class RemoteReward(Reward):
    """The reward served at ``url`` (``http://host:port`` or ``host:port``), sent ``batch_size``
    samples per request, each request waiting at most ``timeout`` seconds."""

    def __init__(self, url: str, timeout: float = 60.0, batch_size: int = 16):
        if batch_size < 1:
            raise InvalidInputError(f"batch_size: must be at least 1, got {batch_size}.")
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")
        self.timeout, self.batch_size = float(timeout), int(batch_size)
        info = json.loads(self._request("/card"))
        spec = {**info["spec"], "differentiable": False}
        for key in ("input_range", "output_range"):
            spec[key] = tuple(spec[key]) if spec.get(key) is not None else None
        super().__init__(RewardSpec(**spec), name=info["name"])
        self.served_card = info.get("card")
        self.batch_size = min(self.batch_size, int(info.get("max_batch_size") or self.batch_size))
        self.freeze()

    def _request(self, route: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + route, data=body, method="POST" if body is not None else "GET",
                                         headers={"Content-Type": "application/octet-stream"} if body else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            message = _server_message(error)
            if error.code == 400:
                raise InvalidInputError(f"remote reward {self.url}: {message}") from error
            raise RemoteRewardError(f"remote reward {self.url}: the server failed ({error.code}: {message}).") from error
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise RemoteRewardError(
                f"remote reward {self.url}: no answer within {self.timeout:g} s ({reason}). Fix: start the server "
                "with `mmalign serve-reward NAME --host HOST --port PORT`, check the address, or raise timeout=.") from error

    def forward(self, samples, prompts=None) -> RewardOutput:
        outputs = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            chunk_prompts = prompts[start : start + self.batch_size] if prompts is not None else None
            outputs.append(decode_output(self._request("/score", encode_request(chunk, chunk_prompts))))
        return concat_outputs(outputs)


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read())["error"]
    except (ValueError, KeyError, OSError):
        return error.reason or "no message"

"""A reward served over loopback HTTP and called as ``remote:``: the same scores, heads and masks as
the reward itself, in batches; the server's own messages for bad input; a clear error, never a
hang, for a server that is down or silent; and `mmalign serve-reward` as a user starts it."""

import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from mmalign.errors import InvalidInputError, RemoteRewardError
from mmalign.rewards import WeightedSum, load_reward
from mmalign.rewards.server import RewardServer
from toys import MeanPixelReward


@pytest.fixture
def served_sum():
    """Two heads, a NaN for dark images: everything RewardOutput carries."""
    reward = WeightedSum([MeanPixelReward(2.0, nan_below=0.2, name="bright"), MeanPixelReward(-1.0, name="dark")], [1.0, 0.5])
    with RewardServer(reward, port=0, max_batch_size=4) as server:
        yield reward, server


def test_remote_scores_equal_the_served_rewards_in_batches(served_sum):
    reward, server = served_sum
    remote = load_reward(f"remote:{server.url}", batch_size=3)
    images = torch.rand(7, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images[2] *= 0.1  # below nan_below: unscored
    local, far = reward(images), remote(images)
    torch.testing.assert_close(far.reward, local.reward, equal_nan=True)
    assert far.mask.tolist() == local.mask.tolist() and far.mask[2].item() is False
    assert set(far.heads) == {"bright", "dark"}
    torch.testing.assert_close(far.heads["dark"], local.heads["dark"])
    assert server.requests == 3  # 7 samples in batches of 3
    assert remote.name == reward.name and remote.spec.differentiable is False


def test_the_client_never_sends_more_than_the_server_takes(served_sum):
    _, server = served_sum
    remote = load_reward(f"remote:{server.url.removeprefix('http://')}", batch_size=100)
    assert remote.batch_size == 4
    remote(torch.rand(9, 3, 4, 4))
    assert server.requests == 3


def test_text_rewards_and_prompts_cross_the_wire():
    verifier = load_reward("shapes-arithmetic-verifier")
    with RewardServer(verifier, port=0) as server:
        remote = load_reward(f"remote:{server.url}")
        prompts, completions = ["12+5=", "3+4="], ["17", "8"]
        assert remote(completions, prompts).reward.tolist() == verifier(completions, prompts).reward.tolist()


def test_bad_input_gets_the_served_rewards_message(served_sum):
    _, server = served_sum
    remote = load_reward(f"remote:{server.url}")
    with pytest.raises(InvalidInputError):
        remote(torch.rand(2, 3, 4, 4) * 255)  # caught by the client's own checks, as locally
    verifier = load_reward("shapes-arithmetic-verifier")
    with RewardServer(verifier, port=0) as text_server:
        with pytest.raises(InvalidInputError, match="remote reward .*prompts"):
            load_reward(f"remote:{text_server.url}").forward(["17"], None)  # skips the client's checks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_is_down_fails_at_once_with_the_fix():
    start = time.monotonic()
    with pytest.raises(RemoteRewardError, match="mmalign serve-reward"):
        load_reward(f"remote:127.0.0.1:{free_port()}", timeout=5)
    assert time.monotonic() - start < 5


def test_a_silent_server_times_out_instead_of_hanging():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections, never answers
    try:
        start = time.monotonic()
        with pytest.raises(RemoteRewardError, match="no answer within 0.5 s"):
            load_reward(f"remote:127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        assert time.monotonic() - start < 10
    finally:
        listener.close()


def test_the_server_keeps_serving_after_a_failure():
    class Broken(MeanPixelReward):
        def forward(self, images, prompts=None):
            if images.shape[0] == 1:
                raise RuntimeError("one image is too few for this model")
            return super().forward(images, prompts)

    with RewardServer(Broken(), port=0) as server:
        remote = load_reward(f"remote:{server.url}")
        with pytest.raises(RemoteRewardError, match="500: RuntimeError: one image is too few"):
            remote(torch.rand(1, 3, 4, 4))
        assert remote(torch.rand(2, 3, 4, 4)).reward.shape == (2,)


def test_concurrent_clients_get_their_own_scores(served_sum):
    reward, server = served_sum
    results, errors = {}, []

    def client(index):
        try:
            images = torch.full((2, 3, 4, 4), 0.3 + 0.05 * index)
            results[index] = load_reward(f"remote:{server.url}")(images).reward
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, scores in results.items():
        torch.testing.assert_close(scores, reward(torch.full((2, 3, 4, 4), 0.3 + 0.05 * index)).reward)


def test_mmalign_serve_reward_as_a_user_starts_it():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mmalign", "serve-reward", "jpeg-compressibility", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, remote = time.monotonic() + 60, None
        while remote is None and time.monotonic() < deadline and server.poll() is None:
            try:
                remote = load_reward(f"remote:127.0.0.1:{port}", timeout=5)
            except RemoteRewardError:
                time.sleep(0.3)
        assert remote is not None, server.stdout.read() if server.poll() is not None else "no server"
        images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(remote(images).reward, load_reward("jpeg-compressibility")(images).reward)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"remote:127.0.0.1:{port}" in output


def test_a_body_that_is_not_a_request_is_answered_400_and_a_server_never_started_closes():
    import urllib.error
    import urllib.request

    with RewardServer(MeanPixelReward(), port=0) as server:
        request = urllib.request.Request(server.url + "/score", data=b"not safetensors", method="POST")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 400 and b"not mmalign's safetensors request" in raised.value.read()
    start = time.monotonic()
    RewardServer(MeanPixelReward(), port=0).close()  # never served: must not wait for a loop
    assert time.monotonic() - start < 5

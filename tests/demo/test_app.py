"""The Gradio app served on the loopback and driven through ``gradio_client``, as a person's browser
would: PNG images, the scores table, votes into the store, a message for each bad input with the
app still serving, files only from the output folder, and 16 clients voting at once."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

PROMPT = "a red circle left of a blue square"
PARTI = json.loads((Path(__file__).parent / "parti_prompts.json").read_text())


def connect(url: str):
    return gradio_client.Client(url, verbose=False, download_files=False)


def generate(client, prompt: str = PROMPT, method: str = "best-of-N", rewards: str = "shapes-clip", seed: int = 0):
    return client.predict(prompt, seed, method, rewards, 3, 2, False, api_name="/generate")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_it_binds_to_the_loopback_with_no_share_link(served):
    _, url = served
    assert url.startswith("http://127.0.0.1:")
    from mmalign.demo import app_module

    assert app_module().launch.__defaults__[0] == "127.0.0.1"


def test_generate_shows_png_pairs_scores_and_the_reno_curve(served):
    session, url = served
    left, right, scores, curve, status = generate(connect(url), method="ReNO")
    for image in (left, right):
        path = Path(image["value"]["path"])
        assert path.suffix == ".png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.is_relative_to((session.output_dir / "gradio").resolve())  # the page's files live there
    assert [row[0] for row in scores["data"]] == ["shapes-clip", "ShapesEval (oracle)"]
    assert curve["visible"] is True and len(curve["value"]["data"]) == 3
    assert status.startswith("Which is better?")


def test_files_are_served_from_the_output_folder_only(served):
    session, url = served
    left, *_ = generate(connect(url))
    assert http_status(f"{url}gradio_api/file={left['value']['path']}") == 200
    assert http_status(f"{url}gradio_api/file={Path(__file__).resolve()}") in (403, 404)
    assert http_status(f"{url}gradio_api/file={session.store.path.resolve()}") in (403, 404)


def test_a_vote_lands_in_the_store_and_the_counter(served):
    session, url = served
    client = connect(url)
    generate(client)
    before = session.label_count()
    left, right, status, counter = client.predict("grace", api_name="/vote_left")
    record = session.store.records()[-1]
    assert (record.choice, record.annotator, record.source, record.prompt) == ("left", "grace", "human", PROMPT)
    assert f"Saved label #{record.id} (left)" in status and "aligned (best-of-N)" in status
    assert f"**{before + 1} label" in counter and "mmalign train d3po --prefs" in counter
    assert "aligned" in left["label"] + right["label"]  # revealed after the vote


@pytest.mark.parametrize("call, message", [
    (lambda c: generate(c, prompt=""), "Prompt: empty"),
    (lambda c: generate(c, prompt=" ".join(PARTI["longest"])[:2000]), "2,000 characters"),
    (lambda c: generate(c, rewards="no-such-reward"), "unknown reward 'no-such-reward'"),
    (lambda c: generate(c, method="LoRA"), "no LoRA is loaded"),
    (lambda c: c.predict("anonymous", api_name="/vote_tie"), "no image pair yet"),
])
def test_bad_input_gets_a_message_and_the_app_keeps_serving(served, call, message):
    session, url = served
    client, before = connect(url), session.label_count()
    with pytest.raises(AppError, match=message):
        call(client)
    assert session.label_count() == before
    assert generate(client)[-1].startswith("Which is better?")


def test_unicode_prompts_are_served(served):
    _, url = served
    client = connect(url)
    for prompt in PARTI["unicode"][:2]:
        scores = generate(client, prompt=prompt)[2]
        assert scores["data"][-1][1] == "not judged (outside the shapes grammar)"


def test_a_lora_of_another_base_gets_a_message_and_the_app_keeps_serving(served, foreign_lora):
    session, url = served
    client = connect(url)
    with pytest.raises(AppError, match="another base model"):
        client.predict(foreign_lora, api_name="/load_lora")
    assert session.lora is None
    assert generate(client)[-1].startswith("Which is better?")


@pytest.mark.slow
def test_sixteen_clients_voting_at_once_lose_nothing(served):
    """16 annotators, 25 pairs each, all at once: 400 rows, each annotator's 25 choices intact."""
    session, url = served
    before = session.label_count()
    choices = ("left", "right", "tie")

    def annotate(index: int) -> list[str]:
        client, made = connect(url), []
        for turn in range(25):
            generate(client, seed=turn)
            choice = choices[(index + turn) % 3]
            client.predict(f"annotator-{index:02d}", api_name=f"/vote_{choice}")
            made.append(choice)
        return made

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        expected = dict(enumerate(pool.map(annotate, range(16))))
    elapsed = time.perf_counter() - start
    records = session.store.records()[before:]
    assert len(records) == 400 and session.label_count() == before + 400
    assert len({r.id for r in records}) == 400
    for index, made in expected.items():
        mine = [r.choice for r in records if r.annotator == f"annotator-{index:02d}"]
        assert mine == made
    print(f"400 generate+vote rounds from 16 clients in {elapsed:.1f} s")

"""mmalign's Gradio demo: base against aligned, side by side, with every score, and a click on the
better image that goes straight into the preference store D3PO trains on.

    mmalign demo --model shapes-turbo                 # ReNO live and best-of-N
    mmalign demo --model shapes-sd --lora outputs/d3po  # a fine-tune against its base, one pipeline

The model work is :class:`mmalign.demo.DemoSession`; this file is the page. Images travel as PNG
(Gradio's default WebP would alter the pixels that were scored). Left and right are drawn at random
per pair, so a label never depends on position; which side was aligned is shown after the vote.
"""

from __future__ import annotations

import functools
import os

import gradio as gr
import pandas as pd

from mmalign.demo import METHODS, Comparison, DemoSession
from mmalign.errors import MMAlignError
from mmalign.prefs.images import as_pil_image  # quantised exactly as the store saves it

# Shapes-world images are 32 px: fill the panel, enlarged as blocks of pixels rather than blurred.
CSS = ".pair img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"
EMPTY_CURVE = pd.DataFrame({"iteration": [], "reward": [], "value": []})


def shown_in_page(handler):
    """Bad input becomes a message in the page (``gr.Error``) instead of a stack trace; the app keeps
    serving either way."""
    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except MMAlignError as error:
            raise gr.Error(str(error), print_exception=False) from error
    return wrapped


def counter_text(session: DemoSession) -> str:
    store = session.store.path
    count = session.label_count()
    return (f"**{count} label{'' if count == 1 else 's'}** in `{store}`. "
            f"Train on them: `mmalign train d3po --prefs {store}`")


def side_label(comparison: Comparison, side: str, reveal: bool) -> str:
    return f"{side.title()}: {comparison.role(side)}" if reveal else side.title()


def build_app(session: DemoSession) -> gr.Blocks:
    """The page for ``session``. Files are served only from ``<output_dir>/gradio``, where Gradio
    writes the PNGs it shows."""
    os.environ["GRADIO_TEMP_DIR"] = str((session.output_dir / "gradio").resolve())  # read when Blocks is built

    def generate(prompt, seed, method, rewards, iterations, num_candidates, reveal,
                 progress=gr.Progress(track_tqdm=True)):  # Gradio shows ReNO's and best-of-N's tqdm bars through it
        comparison = session.compare(prompt, seed, method, rewards, int(iterations), int(num_candidates))
        for warning in comparison.warnings:
            gr.Warning(warning)
        curve = pd.DataFrame(comparison.curve, columns=["iteration", "reward", "value"]) if comparison.curve else EMPTY_CURVE
        return (comparison, *pair_images(comparison, reveal),
                comparison.score_rows(), gr.LinePlot(value=curve, visible=bool(comparison.curve)),
                "Which is better? " + " ".join(comparison.notes + comparison.warnings))

    def pair_images(comparison: Comparison, reveal: bool):
        return [gr.Image(value=as_pil_image(comparison.image(side), side), label=side_label(comparison, side, reveal))
                for side in ("left", "right")]

    def vote(choice: str):
        def record(comparison, annotator):
            label_id = session.vote(comparison, choice, annotator)
            roles = "; ".join(f"{side} was {comparison.role(side)}" for side in ("left", "right"))
            return (comparison, *pair_images(comparison, True),
                    f"Saved label #{label_id} ({choice}). {roles[0].upper()}{roles[1:]}.", counter_text(session))
        return record

    def swap_lora(folder):
        loaded = session.load_lora(folder)
        return f"LoRA loaded from `{loaded}`; pick the method LoRA to compare it with its base."

    with gr.Blocks(title="mmalign demo") as app:
        comparison = gr.State(None)
        gr.Markdown(f"# mmalign: base against aligned\nModel `{session.model}`. Generate a pair, then say which "
                    "image is better; every vote goes into the preference store.")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", value="a red circle left of a blue square", max_lines=3)
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                method = gr.Radio(list(METHODS), value="ReNO", label="Method")
                iterations = gr.Slider(1, 100, value=20, step=1, label="ReNO iterations")
                num_candidates = gr.Slider(2, 32, value=4, step=1, label="best-of-N: N")
                rewards = gr.Textbox(label="Rewards (NAME[=WEIGHT], comma-separated; see `mmalign rewards`)",
                                     value=session.default_rewards)
                reveal = gr.Checkbox(label="Show which image is aligned before voting", value=False)
                generate_button = gr.Button("Generate", variant="primary")
                with gr.Accordion("LoRA", open=session.lora is not None):
                    lora_folder = gr.Textbox(label="LoRA folder (a fine-tune's output_dir)", value=session.lora or "")
                    lora_button = gr.Button("Load LoRA")
                    lora_status = gr.Markdown(f"LoRA loaded from `{session.lora}`." if session.lora else "No LoRA loaded.")
            with gr.Column(scale=2):
                with gr.Row(elem_classes="pair"):
                    left = gr.Image(label="Left", format="png", interactive=False, height=320)
                    right = gr.Image(label="Right", format="png", interactive=False, height=320)
                with gr.Row():
                    left_button = gr.Button("Left is better")
                    tie_button = gr.Button("Tie")
                    right_button = gr.Button("Right is better")
                annotator = gr.Textbox(label="Annotator", value="anonymous", max_lines=1)
                status = gr.Markdown("Press Generate.")
                counter = gr.Markdown(counter_text(session))
                scores = gr.Dataframe(headers=["score", "left", "right"], label="Scores", interactive=False)
                curve = gr.LinePlot(EMPTY_CURVE, x="iteration", y="value", color="reward", label="ReNO reward curve",
                                    visible=False)

        # Model work goes through one queue slot; votes only write to the store, which takes
        # concurrent writers, so they are not held behind a generation.
        generate_button.click(shown_in_page(generate), [prompt, seed, method, rewards, iterations, num_candidates, reveal],
                              [comparison, left, right, scores, curve, status], api_name="generate",
                              concurrency_id="model", concurrency_limit=1)
        lora_button.click(shown_in_page(swap_lora), [lora_folder], [lora_status], api_name="load_lora",
                          concurrency_id="model", concurrency_limit=1)
        for button, choice in ((left_button, "left"), (tie_button, "tie"), (right_button, "right")):
            button.click(shown_in_page(vote(choice)), [comparison, annotator], [comparison, left, right, status, counter],
                         api_name=f"vote_{choice}", concurrency_limit=None)
        app.load(lambda: counter_text(session), None, counter, api_name=False)
    return app


def launch(session: DemoSession, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Serve the demo on ``host`` (loopback unless told otherwise), never through a share link.
    With ``block=False`` it returns ``(app, url)`` and serves in the background."""
    app = build_app(session).queue(default_concurrency_limit=1)
    _, url, _ = app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                           css=CSS, quiet=not block)
    return app, url

"""``ganfuse serve``: a Gradio app over the runs given, bound to 127.0.0.1 unless told otherwise.

Tab "Generate": run, class or prompt, number, seed, truncation -> gallery; and a latent
interpolation strip. Tab "Multimodal": an uploaded image and a text -> match score, answer,
zero-shot labels, caption, from the multimodal runs given (a clear message when there are none).

Every model-running event shares one concurrency group (``Limits.concurrency`` requests compute
at once) behind one bounded queue (``Limits.max_queue`` waiting; more are refused with Gradio's
"queue is full"), so a burst neither crashes nor starves the server. Handlers never take a file
path from the client other than an upload, which must lie in the app's upload folder: a request
cannot read files outside the runs given. That folder is the app's own and bounded in bytes
(``ganfuse.serve.uploads``); an upload that is not an image is answered in words, like every
other bad input. The page loads no remote fonts or scripts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ganfuse.errors import UserError
from ganfuse.inputs import SEED_LIMIT
from ganfuse.run_folders import (
    GanRunInfo,
    benchmark_runs,
    detect_kind,
    display_names,
    gan_run_info,
)
from ganfuse.serve.generate import (
    NUMBER,
    RANDOM_CLASS,
    SEED,
    STEPS,
    TRUNCATION,
    GenerateService,
)
from ganfuse.serve.limits import Limits
from ganfuse.serve.multimodal import MultimodalService
from ganfuse.serve.uploads import UploadFolderBudget, app_upload_folder

log = logging.getLogger("ganfuse")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONCURRENCY_GROUP = "models"


def classify_runs(paths: list[Path]) -> tuple[list[GanRunInfo], dict[str, Path]]:
    """Split the folders given into GAN runs and multimodal runs (a benchmark folder contributes
    the zero-shot and caption runs it kept)."""
    if not paths:
        raise UserError("give at least one run folder to serve")
    gans: list[GanRunInfo] = []
    multimodal: dict[str, Path] = {}
    for name, path in zip(display_names(paths), paths, strict=True):
        kind = detect_kind(path)
        if kind == "gan":
            gans.append(gan_run_info(path, name))
        elif kind == "multimodal":
            multimodal[name] = path
        else:
            kept = benchmark_runs(path)
            if not kept:
                log.warning("%s holds no multimodal run under runs/; nothing of it is served", path)
            multimodal.update({f"{name}/{p.name}": p for p in kept})
    return gans, multimodal


def _error(exc: Exception) -> str:
    return f"**Error:** {exc}"


def build_app(generate: GenerateService, multimodal: MultimodalService, limits: Limits):
    """The Gradio Blocks of the two tabs, with the queue configured; not launched."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    names = generate.names
    first = names[0] if names else None
    first_mode = generate.mode(first) if first else "unconditional"
    shared = {"concurrency_limit": limits.concurrency, "concurrency_id": CONCURRENCY_GROUP}

    # Files older than an hour are deleted every ten minutes, and all of them when the app closes;
    # the byte bound of the folder is ``UploadFolderBudget``'s (see ``serve``).
    with gr.Blocks(title="ganfuse", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown("# ganfuse")
        with gr.Tab("Generate"):
            info = gr.Markdown(
                generate.describe(first)
                if first
                else "No GAN run was given to ganfuse serve: nothing to generate.",
                elem_id="gen-info",
            )
            with gr.Row():
                with gr.Column(scale=1):
                    run = gr.Dropdown(
                        names, value=first, label="Run", visible=len(names) > 1, elem_id="gen-run"
                    )
                    classes = generate.class_choices(first) if first else []
                    class_choice = gr.Dropdown(
                        classes,
                        value=RANDOM_CLASS if classes else None,
                        label="Class",
                        visible=first_mode == "class",
                        elem_id="gen-class",
                    )
                    prompt = gr.Textbox(
                        label="Prompt",
                        info=f"at most {limits.max_prompt_chars} characters; used by text-to-image runs",
                        placeholder="a small red circle in the top left",
                        lines=2,
                        elem_id="gen-prompt",
                    )
                    number = gr.Number(
                        16,
                        precision=0,
                        label=NUMBER,
                        info=f"1 to {limits.max_images}",
                        elem_id="gen-number",
                    )
                    seed = gr.Number(
                        0,
                        precision=0,
                        label=SEED,
                        info=f"0 to {SEED_LIMIT - 1}",
                        elem_id="gen-seed",
                    )
                    truncation = gr.Slider(
                        0.0,
                        3.0,
                        value=0.0,
                        step=0.1,
                        label=f"{TRUNCATION} (0 = off)",
                        elem_id="gen-truncation",
                    )
                    go = gr.Button("Generate", variant="primary", elem_id="gen-button")
                with gr.Column(scale=2):
                    status = gr.Markdown("", elem_id="gen-status")
                    gallery = gr.Gallery(
                        label="Samples", columns=8, format="png", elem_id="gen-gallery"
                    )
            with gr.Row():
                steps = gr.Slider(
                    2,
                    limits.max_interpolation_steps,
                    value=8,
                    step=1,
                    label=STEPS,
                    elem_id="interp-steps",
                )
                interp_go = gr.Button("Interpolate", elem_id="interp-button")
            interp_status = gr.Markdown("", elem_id="interp-status")
            strip = gr.Image(
                label="Latent interpolation",
                format="png",
                interactive=False,
                elem_id="interp-image",
            )

        with gr.Tab("Multimodal"):
            gr.Markdown(multimodal.describe(), elem_id="mm-info")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        type="filepath",
                        sources=["upload"],
                        label="Image",
                        height=256,
                        elem_id="mm-image",
                    )
                    text = gr.Textbox(
                        label="Text (a caption to match, or a question)",
                        info=f"at most {limits.max_prompt_chars} characters",
                        elem_id="mm-text",
                    )
                    analyse = gr.Button("Analyse", variant="primary", elem_id="mm-button")
                with gr.Column():
                    mm_status = gr.Markdown("", elem_id="mm-status")
                    match = gr.Label(label="Match score", elem_id="mm-match")
                    answer = gr.Textbox(label="Answer", interactive=False, elem_id="mm-answer")
                    labels = gr.Label(
                        label="Zero-shot labels", num_top_classes=5, elem_id="mm-labels"
                    )
                    caption = gr.Textbox(label="Caption", interactive=False, elem_id="mm-caption")

        def on_run_change(name):
            mode = generate.mode(name)
            choices = generate.class_choices(name)
            return (
                generate.describe(name),
                gr.Dropdown(
                    choices=choices,
                    value=RANDOM_CLASS if choices else None,
                    visible=mode == "class",
                ),
            )

        def on_generate(
            name, class_value, prompt_value, number_value, seed_value, truncation_value
        ):
            try:
                pictures = generate.generate(
                    name, number_value, seed_value, truncation_value, class_value, prompt_value
                )
            except UserError as exc:
                return [], _error(exc)
            return pictures, f"{len(pictures)} images, seed {int(seed_value or 0)}"

        def on_interpolate(
            name, class_value, prompt_value, steps_value, seed_value, truncation_value
        ):
            try:
                picture = generate.interpolate(
                    name, steps_value, seed_value, truncation_value, class_value, prompt_value
                )
            except UserError as exc:
                return None, _error(exc)
            return (
                picture,
                f"{int(steps_value)} steps between two latents of seed {int(seed_value or 0)}",
            )

        def on_analyse(upload, text_value):
            # The event skips Gradio's preprocessing, which opens the upload with PIL and fails
            # on a non-image with a traceback in the log and {"error": null} to the client:
            # ``upload`` is Gradio's record of the file (already checked to lie in the upload
            # folder), and ``check_upload`` answers a non-image in words.
            path = upload.get("path") if isinstance(upload, dict) else upload
            try:
                result = multimodal.answer(path, text_value)
            except UserError as exc:
                return _error(exc), None, "", None, ""
            notes = "\n".join(f"- {n}" for n in result.notes)
            return notes, result.match or None, result.answer, result.labels or None, result.caption

        run.change(on_run_change, [run], [info, class_choice], api_name=False)
        inputs = [run, class_choice, prompt]
        go.click(
            on_generate,
            [*inputs, number, seed, truncation],
            [gallery, status],
            api_name="generate",
            **shared,
        )
        interp_go.click(
            on_interpolate,
            [*inputs, steps, seed, truncation],
            [strip, interp_status],
            api_name="interpolate",
            **shared,
        )
        analyse.click(
            on_analyse,
            [image, text],
            [mm_status, match, answer, labels, caption],
            api_name="analyse",
            preprocess=False,
            **shared,
        )
    app.queue(max_size=limits.max_queue, default_concurrency_limit=limits.concurrency)
    return app


def serve(
    paths: list[str | Path],
    host: str = "127.0.0.1",
    port: int = 7860,
    limits: Limits | None = None,
    device: str = "cpu",
    block: bool = True,
):
    """Load the runs, build the app and start it. With ``block=False`` it returns at once with the
    running Gradio Blocks (``.close()`` stops it); otherwise it serves until interrupted."""
    limits = limits or Limits()
    gans, multimodal_runs = classify_runs([Path(p) for p in paths])
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    upload_folder = app_upload_folder()  # before gradio is configured: it sets GRADIO_TEMP_DIR
    import gradio as gr
    from starlette.middleware import Middleware

    generate = GenerateService(gans, limits, device)
    multimodal = MultimodalService(multimodal_runs, limits, upload_folder)
    app = build_app(generate, multimodal, limits)
    if host not in LOOPBACK:
        log.warning(
            "serving on %s: anyone who can reach this machine on port %d can use the app",
            host,
            port,
        )
    theme = gr.themes.Default(
        font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            ssr_mode=False,
            mcp_server=False,
            max_file_size=limits.max_upload_bytes,
            app_kwargs={
                "middleware": [
                    Middleware(
                        UploadFolderBudget,
                        folder=upload_folder,
                        max_bytes=limits.max_upload_folder_bytes,
                    )
                ]
            },
            theme=theme,
            footer_links=[],
            prevent_thread_lock=not block,
            quiet=True,
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc}); choose another --port") from None
    return app

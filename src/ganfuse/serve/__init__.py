"""The web app: ``ganfuse serve RUN...`` (Gradio), with request limits and a bounded queue.

Framework-free work lives in :mod:`~ganfuse.serve.generate` and :mod:`~ganfuse.serve.multimodal`;
:mod:`~ganfuse.serve.app` wires it to Gradio.
"""

"""Multimodal learning on ``shapes``: fusion tasks (matching, VQA, multi-task), zero-shot
classification and retrieval with a contrastive dual encoder, label efficiency, captioning,
R-precision, and the benchmark that compares the fusion methods.

Modules are imported where used, so ``import ganfuse.multimodal`` stays cheap.
"""

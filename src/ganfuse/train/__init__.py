"""Training: one readable loop (loop.py) and the pieces it composes."""

"""The TC-MGC model: CLIP towers through open_clip plus the text-conditioned multi-grained head.

Shape alphabet used across the package: Q texts, V videos, T frames, L text tokens (words), D embed dim.
Nothing heavy is imported here; import the submodules you need.
"""

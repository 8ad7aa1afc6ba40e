"""Synthetic scenes: the Scene data types, the frames and units they use, the solids their answers measure,
and the procedural generator with its headless renderer. Imports nothing else from datagen."""

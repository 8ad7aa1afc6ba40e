"""Question generation: the scene graph and its facts, the question templates, and conversations built from
them. Imports datagen.scenes only."""

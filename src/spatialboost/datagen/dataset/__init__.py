"""Dataset I/O: the source-agnostic writer, the validator and the HTML viewer. Imports datagen.scenes and
datagen.questions, never a particular source."""

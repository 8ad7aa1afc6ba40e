"""Real images: file scanning, the perception backends, lifting one image (or fused RGB-D frames) into a
Scene. Imports datagen.scenes only."""

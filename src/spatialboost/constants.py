"""Values several stages must agree on, owned here so that no two modules define them apart.

- ``IMAGE_TOKEN``: the ``<image>`` placeholder; one per image at the start of a LLaVA record's first human
  turn (written by ``datagen``) and one special token of every tokenizer (``data.tokenizer``, ``models.llm``).
- ``POINT_TOKEN`` / ``REGION_TOKEN`` (``REF_TOKENS`` by kind): the reference tokens ``data.refs`` inserts after
  a point or an object a question names, and special tokens of the LM's tokenizer (``models.llm``).
- ``LM_IGNORE_INDEX`` (-100): a language-model target that is not scored (prompt, user turns, image
  slots); PyTorch's ``cross_entropy`` default.
- ``SEG_IGNORE_INDEX`` (255): a segmentation pixel that is not scored (void, boundary, unknown class);
  fits the uint8 class maps of the probe datasets.

Leaf module: it imports nothing from spatialboost.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
POINT_TOKEN = "<point>"
REGION_TOKEN = "<region>"
REF_TOKENS = {"point": POINT_TOKEN, "region": REGION_TOKEN}
LM_IGNORE_INDEX = -100
SEG_IGNORE_INDEX = 255

"""A tiny, randomly initialised Idefics3 model saved like a real one, for offline tests.

It has the real architecture (one text layer, hidden size 32, a 64-pixel vision tower), a
word-level tokenizer with the special tokens Idefics3Processor needs, and a chat template, so
loading it through AutoProcessor / AutoModelForImageTextToText runs the same preprocessing
and generation code as a downloaded model. Its answers are random words.

Used by tests/test_transformers_backend.py; benchmarks may reuse `build_tiny_model`.
"""

from __future__ import annotations

import re
from pathlib import Path

IMAGE_SIZE = 64  # vision tower input; photos are split into tiles of this size
PATCH_SIZE = 16
SCALE_FACTOR = 2
# <image> tokens per tile, as Idefics3 computes it: (64 / 16)^2 / 2^2 = 4
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2

SPECIAL_TOKENS = [
    "<unk>", "<pad>", "<s>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
    "<global-img>",
    # Tile markers used when a photo is split into a grid of tiles.
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
]
WORDS = """
User Assistant System You are a travel agent . Describe in 1 sentence what is the image
Add another for an entertaining story related to this location last saying best place eat
near The Trevi Fountain popular tourist attraction Rome Italy act of tossing coin with one's
right hand over left shoulder said ensure return promise enduring romance city Pinsitaly
restaurant Eiffel Tower Paris France castle Neuschwanstein Bavaria Germany cathedral Santiago
de Compostela Spain old bridge square market river sunset night lights museum café pizza
pasta croissant bakery tapas beer garden , : ; ! ? ' ( ) -
"""

# Written for this test model: role name, a colon, the parts, an end-of-utterance marker.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}:"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _tokenizer():  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]", WORDS)))
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="<end_of_utterance>", additional_special_tokens=SPECIAL_TOKENS[3:],
    )


def build_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny Idefics3 model and its processor under ``path``; return the folder."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,  # the PIL variant: no torchvision needed
    )

    path = Path(path)
    tokenizer = _tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    image_processor = Idefics3ImageProcessorPil(
        # Photos are resized to 128 pixels on the long side and split into up to 2x2 tiles of
        # 64, plus the whole photo at 64: the real code path with a few small tiles.
        size={"longest_edge": 2 * IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    config = Idefics3Config(
        text_config={
            "model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "pad_token_id": ids("<pad>"), "bos_token_id": ids("<s>"),
            "eos_token_id": ids("<end_of_utterance>"),
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=ids("<image>"),
    )
    torch.manual_seed(seed)  # same weights every time, so greedy answers are reproducible
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids("<pad>")
    model.generation_config.eos_token_id = ids("<end_of_utterance>")
    # Random weights would often pick special tokens, which decode to nothing: forbid them,
    # so every generated token is a visible word.
    model.generation_config.suppress_tokens = [ids(token) for token in SPECIAL_TOKENS]

    processor.save_pretrained(path)
    model.save_pretrained(path)
    return path

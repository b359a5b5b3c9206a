"""Tiny, randomly initialised Idefics3 and SmolVLM models saved like real ones, for offline tests.

Each has the real architecture (one text layer, hidden size 32, a 64-pixel vision tower), a
word-level tokenizer with the special tokens the processor needs, and a chat template, so
loading it through AutoProcessor / AutoModelForImageTextToText runs the same preprocessing
and generation code as a downloaded model. Its answers are random words.

Used by tests/test_transformers_backend.py; benchmarks may reuse `build_tiny_model`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

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


# The shape of SmolVLM's template (transformers' processing_smolvlm.DEFAULT_CHAT_TEMPLATE without
# its video and plain-string branches): "<|im_start|>User: Describe<image><end_of_utterance>\n
# Assistant:", with ":" instead of ": " when a message starts with an image.
SMOLVLM_BOS = "<|im_start|>"
SMOLVLM_CHAT_TEMPLATE = (
    SMOLVLM_BOS +
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _tokenizer(bos_token: str = "<s>"):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + ([bos_token] if bos_token not in SPECIAL_TOKENS else [])
    words = sorted(set(re.findall(r"\w+|[^\w\s]", WORDS)))
    vocab = {token: index for index, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token=bos_token,
        eos_token="<end_of_utterance>",
        additional_special_tokens=[t for t in specials if t not in ("<unk>", "<pad>", bos_token)],
    )


def _image_processor_options() -> dict:
    # Photos are resized to 128 pixels on the long side and split into up to 2x2 tiles of 64,
    # plus the whole photo at 64: the real code path with a few small tiles.
    return {"size": {"longest_edge": 2 * IMAGE_SIZE},
            "max_image_size": {"longest_edge": IMAGE_SIZE}, "do_image_splitting": True}


def _model_config(tokenizer) -> dict:
    """Idefics3Config / SmolVLMConfig arguments (SmolVLM is the Idefics3 architecture)."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "text_config": {
            "model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "pad_token_id": ids("<pad>"), "bos_token_id": ids(tokenizer.bos_token),
            "eos_token_id": ids("<end_of_utterance>"),
        },
        "vision_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
        },
        "scale_factor": SCALE_FACTOR,
        "image_token_id": ids("<image>"),
    }


def _save_model(model, tokenizer, path: Path) -> None:
    ids = tokenizer.convert_tokens_to_ids
    model.generation_config.pad_token_id = ids("<pad>")
    model.generation_config.eos_token_id = ids("<end_of_utterance>")
    # Random weights would often pick special tokens, which decode to nothing: forbid them,
    # so every generated token is a visible word.
    model.generation_config.suppress_tokens = sorted(
        {*ids(SPECIAL_TOKENS), ids(tokenizer.bos_token)})
    model.save_pretrained(path)


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
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(**_image_processor_options()),
        tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)  # same weights every time, so greedy answers are reproducible
    model = Idefics3ForConditionalGeneration(Idefics3Config(**_model_config(tokenizer)))
    processor.save_pretrained(path)
    _save_model(model, tokenizer, path)
    return path


SmolVLMLayout = Literal["hub", "transformers5"]


def build_tiny_smolvlm(path: str | Path, layout: SmolVLMLayout = "hub", seed: int = 0) -> Path:
    """Save a tiny SmolVLM model with a SmolVLMProcessor's files under ``path``; return it.

    A SmolVLMProcessor cannot be built here (it needs torchvision for its video processor
    and num2words), so its files are written from their parts, in one of two layouts:

    - "hub": as transformers 4 saved processors, the layout assumed for the published
      HuggingFaceTB/SmolVLM-256M-Instruct: preprocessor_config.json (the image processor),
      processor_config.json (image_seq_len and processor_class only), tokenizer files naming
      the processor, chat_template.json.
    - "transformers5": as SmolVLMProcessor.save_pretrained writes it in transformers 5:
      processor_config.json holding the image and video processors, chat_template.jinja.

    The model itself is a SmolVLMForConditionalGeneration saved by transformers (model_type
    "smolvlm").
    """
    import torch
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil,
    )
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    processor_class = {"processor_class": "SmolVLMProcessor"}
    tokenizer = _tokenizer(bos_token=SMOLVLM_BOS)
    tokenizer.save_pretrained(path)
    _update_json(path / "tokenizer_config.json", processor_class)
    # Saved under its torchvision name, "SmolVLMImageProcessor", as the real one is.
    image_processor = SmolVLMImageProcessorPil(**_image_processor_options()).to_dict()
    if layout == "hub":
        _write_json(path / "preprocessor_config.json", image_processor | processor_class)
        _write_json(path / "processor_config.json",
                    {"image_seq_len": IMAGE_SEQ_LEN} | processor_class)
        _write_json(path / "chat_template.json", {"chat_template": SMOLVLM_CHAT_TEMPLATE})
    else:
        # Constructing the video processor needs no torchvision; only using it does.
        video_processor = SmolVLMVideoProcessor(
            size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}
        ).to_dict()
        _write_json(path / "processor_config.json", {
            "image_processor": image_processor, "image_seq_len": IMAGE_SEQ_LEN,
            **processor_class, "video_processor": video_processor,
        })
        (path / "chat_template.jinja").write_text(SMOLVLM_CHAT_TEMPLATE)

    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(SmolVLMConfig(**_model_config(tokenizer)))
    _save_model(model, tokenizer, path)
    return path


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _update_json(path: Path, data: dict) -> None:
    _write_json(path, json.loads(path.read_text()) | data)

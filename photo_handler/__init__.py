"""The photo function's code, zipped whole beside ``lambda_code.py`` (the handler).

Each module holds one thing the handler does; the handler's steps call them in order:

- ``settings``: the configuration read from the environment, and the defaults;
- ``errors``: the failures a photo can meet, and how foreign text is made safe to keep;
- ``logs``: the function's one logger and its one JSON line per photo;
- ``clients``: the AWS clients, cached per warm container, and what the SDK supports;
- ``sniff``: a photo's format and size from its first bytes, and the size limits;
- ``upload``: reading the photo, and telling one upload of a key from another;
- ``records``: the result's key, the earlier result, and the conditional result write;
- ``web_photos``: the web page's photos: one photo per upload form, the gallery's copy;
- ``request``: the request body (the one-shot prompt, or a preset's) and the images it carries;
- ``budget``: sizing the images to the model container's token budget and payload limit;
- ``model``: calling the endpoint, with retries within the time left;
- ``converse``: a managed model instead (MODEL_KIND=bedrock): Amazon Bedrock's Converse;
- ``answer``: the model's text (or structured fields) out of its response;
- ``presets``, ``presets_schema``: answer presets (PRESETS_TABLE set);
- ``asynchronous``: SageMaker Asynchronous Inference (INFERENCE_MODE=async);
- ``resize``: images sent inline or made smaller, with Pillow;
- ``serving_limits``: the model container's limits and rules (shared with visual_tourism).

Modules import only each other, never the handler. ``presets``, ``presets_schema``,
``asynchronous``, ``converse`` and ``resize`` (with Pillow) are imported inside the functions
that need them, so that a cold start compiles only what the configuration uses.
"""

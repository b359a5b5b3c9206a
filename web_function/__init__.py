"""The web function's code: ``app.py`` (handler ``web_function.app.lambda_handler``) and the
page it serves, ``page.html``. The folder is zipped whole (visual_tourism/packaging.py) and
imports only itself, the standard library and boto3."""

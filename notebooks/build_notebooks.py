"""Write the notebooks of this folder from the cells below, and check the committed ones.

    python notebooks/build_notebooks.py           # (re)write every notebook
    python notebooks/build_notebooks.py --check   # fail if a notebook differs or holds outputs

The notebooks are generated so that a change to them is a reviewable diff of this file, and so
that what is committed never carries outputs, execution counts or account data. Their code
cells only call `visual_tourism.stack` and `visual_tourism.notebook`.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import nbformat

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
SERIES = """\
| Notebook | What it creates |
|---|---|
| `01_setup` | nothing yet: checks where it runs, saves your settings |
| `02_bucket_and_roles` | the private bucket, two least-privilege IAM roles, the answer presets |
| `03_model` | the model, endpoint configuration and endpoint (GPU, billed hourly), the deadline |
| `04_autoscaling` | the endpoint's scaling target and policies (and, in async mode, an alarm) |
| `05_lambda_trigger` | the Lambda function, its log group and the S3 trigger |
| `06_demo` | photos in, answers out; an interactive panel; tuning the answer presets |
| `07_cleanup` | removes all of the above and confirms nothing billable is left |
"""

Cell = tuple[str, str]


def md(text: str) -> Cell:
    return ("markdown", textwrap.dedent(text).strip())


def code(text: str) -> Cell:
    return ("code", textwrap.dedent(text).strip())


NOTEBOOK_NAME = "<this notebook>"  # replaced by each notebook's name in build()


def setup(*imports: str, extra: str = "") -> Cell:
    """The first code cell of every notebook: settings, AWS clients, where we are running."""
    lines = [
        f"from visual_tourism import {', '.join(sorted(imports))}",
        "from visual_tourism.aws import Aws",
        *([extra] if extra else []),
        "",
        f'notebook.one_line_errors("{NOTEBOOK_NAME}")  # expected errors: one line, what to '
        "run first",
        "cfg = notebook.load_settings()",
        "aws = Aws(cfg.region)",
        "notebook.show_calls_under_cells(aws)  # each later cell's AWS requests, as boto3 code",
        "print(notebook.describe_environment(cfg, aws))",
    ]
    return ("code", "\n".join(lines))


SETUP_TEXT = md("""
    ## Setup

    Reads the settings saved by `01_setup` (and any `VT_*` environment variables), and says
    where this notebook runs: local mode, SageMaker Studio, or your machine's AWS credentials.
    From here on, a cell that creates or changes something on AWS shows, under its output,
    **AWS calls made by this cell**: click it to see the requests as boto3 code you can copy
    into a script of your own (your account ID is looked up as `account`; secrets and file
    contents are left out). Expected errors, such as a resource that is not there yet, are
    one line that says what to run first.
""")


def where_next(previous: str | None, following: str | None) -> str:
    parts = []
    if previous:
        parts.append(f"Before this: `{previous}`.")
    if following:
        parts.append(f"Next: `{following}`.")
    return " ".join(parts)


NOTEBOOKS: dict[str, list[Cell]] = {
    "00_quickstart": [
        md("""
            # Visual Tourism: quickstart

            A traveller's photo uploaded under `input/` in a private S3 bucket triggers a Lambda
            function that asks a vision-language model on a SageMaker endpoint to describe the
            place, tell a story about it and say where to eat. The answer is written as JSON
            under `output/`.

            This notebook does it all with four calls of the package: `up`, `ask`, `status`,
            `down`. Notebooks `01_setup` to `07_cleanup` take the same path one resource at a
            time and explain each one. Under the output of a cell that changes something on
            AWS, **AWS calls made by this cell** opens the requests it sent, as boto3 code to
            copy.

            1. Where are we running?
            2. Build the stack
            3. Ask about a photo
            4. What runs, and what it costs
            5. Clean up

            > **Cost:** on AWS the endpoint is a GPU instance billed by the hour from step 2
            > until step 5 (the default profile runs on `ml.g4dn.12xlarge`); in async mode
            > (`inference_mode = "async"`) only while it has instances, and it scales to zero
            > when idle. Run step 5 when you are done. In local mode nothing is billed.
        """),
        md("""
            ## 1. Where are we running?

            The environment decides, not the notebook. With `AWS_ENDPOINT_URL` pointing at
            `127.0.0.1` (the variables `visual-tourism local serve` prints) everything runs
            against the local stand-in; inside SageMaker Studio the Studio execution role is
            used; anywhere else, your machine's AWS credentials (`AWS_PROFILE`,
            `aws sso login`). Settings come from `01_setup`'s settings file, if saved, and
            `VT_*` variables.
        """),
        setup("notebook", "stack", extra="from visual_tourism.config import IMAGES_DIR"),
        md("""
            ## 2. Build the stack

            `stack.up` creates, in order: the private bucket and its folders, two
            least-privilege IAM roles, the SageMaker model and endpoint, the Lambda function,
            autoscaling, and last the S3 trigger, so that uploads start work only once
            everything behind the trigger is ready. Every step is idempotent: after a failure,
            fix the cause and run the cell again.

            > **Time and cost:** on AWS this cell takes 10-15 minutes (a GPU endpoint starting)
            > and the endpoint is billed from now until step 5. In local mode, seconds.
        """),
        code("""
            print(notebook.cost_warning(cfg))
            names = stack.up(cfg, aws, progress=notebook.say)
        """),
        md("""
            ## 3. Ask about a photo

            `stack.ask` uploads the photo under `input/`, which fires the trigger, then checks
            `output/` with one cheap HEAD request at a time until the result for this very
            upload appears; no fixed sleep.
        """),
        code("""
            photo = IMAGES_DIR / "tour_eiffel.jpeg"
            record = stack.ask(photo, cfg, aws, progress=notebook.say)
            notebook.show_side_by_side(photo, record)
        """),
        md("""
            ## 4. What runs, and what it costs

            Each resource's state as AWS reports it, and the endpoint's hourly cost.
        """),
        code("notebook.show(stack.status(cfg, aws))"),
        md("""
            ## 5. Clean up

            `stack.down` removes everything newest first: the trigger (so no upload starts new
            work), the function, autoscaling, the endpoint (the part billed by the hour), its
            models and configurations, the log groups, the roles, and here also the bucket with
            its photos and results. It is safe to run twice. The last line checks on AWS itself
            that nothing billable is left, and fails if something is.
        """),
        code("""
            removed = stack.down(cfg, aws, delete_bucket=True, progress=notebook.say)
            notebook.confirm_clean(cfg, aws)
        """),
    ],
    "01_setup": [
        md(f"""
            # 1. Set-up and configuration

            The step-by-step path through Visual Tourism, one resource at a time
            (`00_quickstart` does it all in five cells):

            {textwrap.indent(SERIES, " " * 12).strip()}

            This notebook creates nothing. It checks where it runs, helps you pick a model, and
            saves your settings for the other notebooks.

            1. Where are we running?
            2. Choose a model
            3. The settings
            4. Save them for the other notebooks
            5. What the next notebooks will create

            {where_next(None, "02_bucket_and_roles")}
        """),
        md("""
            ## 1. Where are we running?

            The same notebooks run in three places; the environment decides which:

            - **Local mode** when `AWS_ENDPOINT_URL` points at `127.0.0.1`: run
              `visual-tourism local serve` in a terminal and export what it prints before
              starting JupyterLab. S3, IAM, Lambda and SageMaker are emulated; nothing is billed.
            - **SageMaker Studio**: the Studio execution role is used. It needs permission to
              create S3 buckets, IAM roles, SageMaker endpoints and Lambda functions; the
              endpoint runs under the Studio role itself, which is never modified.
            - **Your machine against AWS**: your AWS credentials (`AWS_PROFILE`,
              `aws sso login`, ...) and their region.

            The cell prints which one this is, without the full account ID.
        """),
        setup("notebook"),
        md("""
            ### May you run every step, and does the account have room?

            The table lists each step of the next notebooks and whether the identity this
            notebook runs as (in SageMaker Studio, your execution role) may run it, with the
            exact permissions a step lacks, or why it cannot tell. If anything is missing, run
            `visual-tourism admin-policy` in a terminal and give its output to your
            administrator: it is the least-privilege policy to add to your role.

            Under **limits**, the account's room for the plan, one line each (ok, SHORT or
            cannot tell, with the figures): the region, the endpoint instance type's quota
            against the instances the plan needs, and Lambda's concurrency against what the
            stack reserves. A new account often has 0 GPU endpoint instances, and AWS can take
            days to raise that: a SHORT line gives the exact request command, or a smaller plan
            or another model that fits now (section 3 below changes either).
        """),
        code("notebook.preflight(cfg, aws)"),
        md("""
            ## 2. Choose a model

            A hosted profile bundles an open model, the container that serves it (Hugging Face
            TGI or AWS LMI), and a GPU instance this stack deploys as a SageMaker endpoint. A
            managed profile (`nova-lite`, `llama3.2-11b-vision`) is a model Amazon Bedrock
            serves: nothing to deploy, no GPU quota to request, nothing billed while idle, a
            price per photo's tokens instead. Mind the licence: `idefics-9b-instruct` (the
            original design) is for research only; the Qwen profile is Apache-2.0.
        """),
        code("notebook.show_profiles()"),
        md("""
            ## 3. The settings

            One plain dict. It starts from the current configuration (defaults, a settings file
            saved earlier, `VT_*` variables); replace any value with a literal, for example
            `"model_profile": "qwen2.5-vl-7b-instruct"`.

            - `prefix` names every resource (`<prefix>-endpoint`, `<prefix>-handler`, ...); use
              one per stack.
            - `bucket`: empty means `<prefix>-<account>-<region>`, unique worldwide.
            - `instance_type`: empty means the profile's.
            - `min_instances`, `max_instances`, `target_invocations`, the cooldowns: see
              `04_autoscaling`.
            - `inference_mode`: `"realtime"` or `"async"`, see `03_model`.
            - `stop_after`: e.g. `"3h"`; empty means no stop deadline (see `03_model`).

            The guard refuses values left over from an example, such as `"<your-bucket>"` or
            `"CHANGE_ME"`, before anything is created with them.
        """),
        code("""
            settings = {
                "region": cfg.region,
                "prefix": cfg.prefix,
                "bucket": cfg.bucket,
                "model_profile": cfg.model_profile,
                "instance_type": cfg.instance_type,
                "min_instances": cfg.min_instances,
                "max_instances": cfg.max_instances,
                "target_invocations": cfg.target_invocations,
                "scale_in_cooldown": cfg.scale_in_cooldown,
                "scale_out_cooldown": cfg.scale_out_cooldown,
                "inference_mode": cfg.inference_mode,
                "stop_after": cfg.stop_after,
            }
            notebook.show(notebook.check_placeholders(settings))
        """),
        md("""
            ## 4. Save them for the other notebooks

            Each notebook runs in its own kernel, so the settings go to a small TOML file that
            every notebook's first cell reads: `settings.toml` in `~/.visual-tourism` (or in
            `$VT_STATE_DIR`), or the file `VT_CONFIG` names. It lives outside the repository, so
            nothing account-specific is committed. Every value is validated first: an unknown
            region or profile, or `min_instances > max_instances`, fails here rather than ten
            minutes into a deployment. `VT_*` environment variables still win over the file.
        """),
        code("cfg = notebook.save_settings(settings)"),
        md("""
            ## 5. What the next notebooks will create

            Names follow from the prefix. The bucket name contains the account ID, masked in
            this output; `print(notebook.bucket_name(cfg, aws))` shows it in full.
        """),
        code("notebook.show(notebook.plan(cfg, aws))"),
    ],
    "02_bucket_and_roles": [
        md(f"""
            # 2. The bucket, its folders, the IAM roles and the answer presets

            Creates the S3 bucket the whole workflow runs through, the two roles that may
            use it, and the table of answer presets. Nothing here is billed by the hour.

            1. A private bucket
            2. Check it
            3. Two roles, each with least privilege
            4. What the Lambda function may do
            5. The answer presets

            {where_next("01_setup", "03_model")}
        """),
        SETUP_TEXT,
        setup("notebook", "stack"),
        md("""
            ## 1. A private bucket

            The original design made the bucket public: anyone could read every traveller's
            photo and answer, and anyone able to upload could run up GPU cost. This bucket has
            all four Block Public Access settings on, default encryption at rest, a policy that
            refuses any request without TLS, and the stack's tag, so clean-up deletes only what
            this tool created.

            Its folders: `input/` takes uploads and is the only place the trigger watches;
            `example/` holds the Trevi Fountain photo, the model's in-context example;
            `output/` receives results. Results live outside `input/`, so writing one never
            triggers the function again. Running the cell again changes nothing.
        """),
        code("bucket_name = stack.create_bucket(cfg, aws, progress=notebook.say)"),
        md("""
            ## 2. Check it

            Privacy, the policy, and what each folder holds (account ID masked).
        """),
        code("notebook.show_bucket(cfg, aws)"),
        md("""
            ## 3. Two roles, each with least privilege

            - The **Lambda role** may read `input/` and `example/`, read and write `output/`,
              list the bucket (so a missing result reads as 404, not 403), invoke this one
              endpoint, and write its own logs. Nothing else.
            - The **SageMaker role** lets the endpoint pull its container image and write its
              logs and metrics. It has no S3 access: the model reads photos through short-lived
              presigned URLs. In SageMaker Studio the Studio execution role plays this part
              and is left unchanged.
        """),
        code("roles = stack.create_roles(cfg, aws, progress=notebook.say)"),
        md("""
            ## 4. What the Lambda function may do

            The Lambda role's policy, statement by statement.
        """),
        code("notebook.show_lambda_policy(cfg, aws)"),
        md("""
            ## 5. The answer presets

            A preset is a named way of answering: the instruction, up to three example photos
            with their written answers, the answer language and the generation parameters.
            The uploader picks one per photo (S3 metadata), and the function reads it with one
            DynamoDB request. The table is on-demand (cents for a class), encrypted, with
            point-in-time recovery; it is seeded with `default` (the original prompt),
            `family`, `history` and `food`, and the seeds' example photos go under `example/`.
            Running the cell again never undoes an edit. `06_demo` edits one.
        """),
        code("presets_table = stack.create_presets(cfg, aws, progress=notebook.say)"),
    ],
    "03_model": [
        md(f"""
            # 3. The model on a SageMaker endpoint

            Creates a SageMaker model (container image, model ID, container settings), an
            endpoint configuration (instance type and count) and an endpoint, real-time or
            asynchronous. Model and
            configuration names carry a hash of their content: a changed profile or instance
            type makes new ones, the endpoint switches to them in place, and the old ones are
            deleted.

            1. The model profile
            2. Request the endpoint
            3. A stop deadline
            4. Wait until it is in service
            5. Check it

            {where_next("02_bucket_and_roles", "04_autoscaling")}
        """),
        SETUP_TEXT,
        setup("notebook", "stack"),
        md("""
            ## 1. The model profile

            The model, the Hugging Face TGI container version that serves it (resolved through
            the SageMaker SDK's `image_uris`, never a hand-written registry address), the
            instance, and the container's settings (`SM_NUM_GPUS` shards the model over the
            instance's GPUs).
        """),
        code("notebook.show_model(cfg)"),
        md("""
            ### Hosted or managed: what a photo costs

            With a managed profile (Amazon Bedrock) the cells below create no model, endpoint,
            autoscaling or deadline: each says so, and the function calls the model directly
            with the Converse API. Per photo, at list prices, at 10, 100 and 1,000 photos a
            day, idle included: a real-time endpoint bills all day whatever the volume, a
            managed model only each photo's tokens. `visual-tourism eval --profiles
            smolvlm-instruct,nova-lite` measures recognition, latency and cost on the same
            labelled photos.
        """),
        code("notebook.hosted_vs_managed(cfg)"),
        md("""
            ### Real-time or asynchronous?

            **Real-time** (the default) keeps at least one GPU instance running from `up` to
            clean-up: answers in seconds, billed while idle. **Asynchronous** queues photos in
            the bucket and scales to zero instances when nobody uploads: idle costs nothing,
            but the first photo after idle waits minutes while a GPU instance starts. Change
            `inference_mode` below to `"async"` to choose it; the choice is saved for the next
            notebooks (autoscaling, the function and its triggers follow it).
        """),
        code("""
            print(notebook.mode_tradeoff(cfg))
            inference_mode = cfg.inference_mode  # "realtime" or "async"
            cfg = notebook.use_inference_mode(inference_mode)
        """),
        md("""
            ### Is there room for it?

            The account's limits for the plan saved in `01_setup`: the endpoint instance type's
            quota (every endpoint of the account counts), Lambda's concurrency and the region.
            If a line is SHORT, the next cell would fail with `ResourceLimitExceeded`: raise the
            quota (the line gives the command; AWS reviews GPU increases, which can take days),
            or go back to `01_setup` for the smaller plan or the model it names.
        """),
        code("notebook.limits(cfg, aws)"),
        md("""
            ## 2. Request the endpoint

            > **Time and cost:** billing starts with this cell. **Real-time:** the endpoint's
            > instances are charged by the hour until `07_cleanup` deletes it, whether they
            > answer photos or not. **Async:** it starts with one instance, charged while it
            > runs; once `04_autoscaling` attaches its scaling it goes down to zero instances
            > when idle and costs nothing then, and each instance it starts for queued photos
            > is charged while it runs. The cell prints the figures for the mode chosen above.
            > It returns at once; waiting for the endpoint takes 10-15 minutes on AWS.
        """),
        code("""
            print(notebook.cost_warning(cfg))
            print(notebook.cost_before(cfg))
            names = stack.start_endpoint(cfg, aws, progress=notebook.say)
        """),
        md("""
            ## 3. A stop deadline

            With `stop_after` set in `01_setup` (for example `"3h"`), this cell creates an
            EventBridge Scheduler one-time schedule, with a role that may make only that one
            call, which at that time **deletes the endpoint** (real-time: billing stops; `up`
            or this notebook brings it back) or **sets its capacity to zero** (async: queued
            photos wait until `visual-tourism wake`). It fires even if nobody runs
            `07_cleanup`, which removes it with everything else.
        """),
        code("notebook.arm_deadline(cfg, aws)"),
        md("""
            ## 4. Wait until it is in service

            > **Time:** 10-15 minutes on AWS while the instance starts, the container downloads
            > the model and loads it onto the GPUs (the health check allows 15 minutes). One
            > line per status change and about one a minute; seconds in local mode.

            If it fails, the message carries SageMaker's reason and where the container logs
            are; fix the cause and run the previous cell again.
        """),
        code("stack.wait_for_endpoint(cfg, aws, progress=notebook.say)"),
        md("""
            ## 5. Check it

            The endpoint's state, instance type and instance count.
        """),
        code('notebook.show(stack.status(cfg, aws)["endpoint"])'),
    ],
    "04_autoscaling": [
        md(f"""
            # 4. Autoscaling

            Registers the endpoint's variant with Application Auto Scaling (between a minimum
            and a maximum number of instances) and attaches the policies of the mode chosen in
            `03_model`: a target-tracking policy on `SageMakerVariantInvocationsPerInstance`
            (real-time), or, for an asynchronous endpoint, a minimum of 0, a target on the
            queue backlog per instance and a step policy that starts an instance from zero.

            1. The plan
            2. Attach it
            3. Check it

            {where_next("03_model", "05_lambda_trigger")}
        """),
        SETUP_TEXT,
        setup("notebook", "stack"),
        md("""
            ## 1. The plan

            The cell below shows the plan of the mode this stack uses (`mode`).

            **Real-time** (`inference_mode = "realtime"`):

            - The metric counts **invocations per instance per minute**. One answer takes the
              model seconds, so a target of 5 adds an instance well before requests queue.
            - **Minimum 1:** a real-time endpoint cannot scale to zero (that needs inference
              components or asynchronous inference), so one instance is billed at all times
              until clean-up. The **maximum** caps what a burst of uploads can cost.
            - **Scale-out cooldown, 300 s:** a new GPU instance needs about ten minutes before it
              serves; waiting between additions keeps one burst from adding several.
            - **Scale-in cooldown, 600 s:** removing an instance in a short lull only to start
              one again costs another ten-minute start; scale in slowly.

            **Asynchronous** (`inference_mode = "async"`), as AWS documents for asynchronous
            endpoints:

            - **Minimum 0:** with no photo queued the endpoint scales in to zero instances and
              costs nothing. The **maximum** caps what a burst of uploads can cost.
            - **Target tracking on `ApproximateBacklogSizePerInstance`:** adds instances while
              more photos wait per instance than the target, removes them when the queue is
              empty.
            - **A step policy on an alarm on `HasBacklogWithoutCapacity`:** target tracking
              cannot start the first instance from zero, so this alarm adds one as soon as a
              photo waits with no instance. That photo waits 5-10 minutes on AWS while the GPU
              instance starts; `visual-tourism wake` before a class avoids it, and
              `visual-tourism sleep` afterwards goes back to zero.
        """),
        code("notebook.show(notebook.autoscaling_plan(cfg))"),
        md("""
            ## 2. Attach it

            Idempotent: changed settings update the target and policy in place. In local mode
            they are stored but nothing scales.
        """),
        code("stack.attach_autoscaling(cfg, aws, progress=notebook.say)"),
        md("""
            ## 3. Check it
        """),
        code('notebook.show(stack.status(cfg, aws)["autoscaling"])'),
    ],
    "05_lambda_trigger": [
        md(f"""
            # 5. The Lambda function and its S3 trigger

            Deploys the photo function (`lambda_code.py` and its `photo_handler/` folder) and
            connects it to the bucket, so that every photo uploaded under `input/` gets an
            answer under `output/`.

            1. The function
            2. Connect the trigger
            3. Check it

            {where_next("04_autoscaling", "06_demo")}
        """),
        SETUP_TEXT,
        setup("notebook", "stack"),
        md("""
            ## 1. The function

            The zip holds `lambda_code.py` and `photo_handler/` (with Pillow when the function
            may resize images) and is built byte-for-byte the same each time, so an unchanged
            function is not re-uploaded. The function runs under the Lambda role
            from `02_bucket_and_roles`, with the bucket, endpoint and prompt in its environment,
            a 300 s timeout (one model call may take 60 s, and it retries) and a log group kept
            14 days. A
            failure is written as an error record rather than raised: S3 invokes the function
            asynchronously, and a raised error would be retried, re-running GPU inference.
        """),
        code("function_arn = stack.deploy_function(cfg, aws, progress=notebook.say)"),
        md("""
            ## 2. Connect the trigger

            In this order: first a permission that lets S3 invoke the function, for this bucket
            and this account only; then a notification for new objects under `input/`, merged
            into the bucket's existing notifications so that others survive. From the end of
            this cell, uploads get answers.
        """),
        code("stack.connect_trigger(cfg, aws, progress=notebook.say)"),
        md("""
            ## 3. Check it

            `trigger` is true only when both the permission and the notification are in place.
        """),
        code('notebook.show(stack.status(cfg, aws)["function"])'),
    ],
    "06_demo": [
        md(f"""
            # 6. Demo: a photo in, travel advice out

            Every upload under `input/` runs the function, which asks the model and writes the
            answer under `output/`. The endpoint from `03_model` serves each question; here the
            only extra cost is the Lambda run and a few S3 requests.

            1. One photo
            2. The result record
            3. On a phone: the class's web page
            4. Try your own
            5. What a failure looks like
            6. Tune the answers: edit a preset

            {where_next("05_lambda_trigger", "07_cleanup")}
        """),
        SETUP_TEXT,
        setup("notebook", "stack", extra="from visual_tourism.config import IMAGES_DIR"),
        md("""
            ## 1. One photo

            `stack.ask` uploads the photo, then checks `output/` with one cheap HEAD request at a
            time until the result of this very upload (matched by its ETag) appears.
        """),
        code("""
            photo = IMAGES_DIR / "tour_eiffel.jpeg"
            record = stack.ask(photo, cfg, aws, progress=notebook.say)
            notebook.show_side_by_side(photo, record)
        """),
        md("""
            ## 2. The result record

            What the function stored: `status` with the `answer` (or an `error` with a code and
            what to do), the `input` it answered, the `model` that answered, and `timing`.
            `print(json.dumps(record, indent=2))` shows the JSON itself.
        """),
        code("notebook.show_record(record)"),
        md("""
            ## 3. On a phone: the class's web page

            `up` also built a small web page: students scan the QR code, take a photo, and see
            its answer and the class's gallery. The access code travels in the link after `#`
            (browsers never send that part to a server); `visual-tourism web --rotate-code`
            replaces it. Requests beyond the stage's throttling get "too many requests", so a
            leaked link cannot run up the bill.
        """),
        code("""
            notebook.show_web_link(cfg, aws)
        """),
        md("""
            ## 4. Try your own

            Choose one of the bundled photos or upload one of yours, choose how the answer
            should be written (a preset, such as `family` for children) and in which language,
            press the button, and watch each step until the answer appears beside the photo.
            Uploads go to this stack's private bucket only. Type where the photo was taken in
            **Taken near** (latitude, longitude) and the answer recommends among the real
            places to eat nearby, listed under it (Amazon Location Service, about $0.004 a
            photo; without it, the photo's own GPS is used if it has one).
        """),
        code("""
            panel = notebook.demo_panel(cfg, aws)
            panel
        """),
        md("""
            ## 5. What a failure looks like

            A text file named like a photo. The function checks the bytes, not the name, and
            refuses it before calling the model, so no GPU time is spent; the error record says
            what went wrong and what to do.
        """),
        code("""
            not_a_photo = notebook.sample_not_a_photo()
            error_record = stack.ask(not_a_photo, cfg, aws, progress=notebook.say)
            notebook.show_side_by_side(not_a_photo, error_record)
        """),
        md("""
            ## 6. Tune the answers: edit a preset

            The presets live in the stack's DynamoDB table (`02_bucket_and_roles`), so
            changing one changes the next answer, with no redeployment. First a preset of your
            own, a copy of `family`, so that the seeded ones stay as they are (if it exists,
            it is left as it is), and the answer `family` gives now.
        """),
        code("""
            photo = IMAGES_DIR / "neuschwanstein.jpeg"
            mine = notebook.copy_preset(cfg, aws, "family", "my-class")
            before = notebook.compare_answers(cfg, aws, photo, "family")
            before
        """),
        md("""
            ### A change the model's container would refuse

            Every change is checked against the active model profile's container before it is
            written: TGI, for instance, refuses `top_p` of 1.0 (it wants 0 < top_p < 1), and
            the message names the field and the allowed range. `check_edit` only checks;
            nothing is written.
        """),
        code('notebook.show(notebook.check_edit(cfg, aws, "my-class", top_p=1.0))'),
        md("""
            ### Save a change, then ask again

            `edit_preset` saves a new version (it refuses, writing nothing, if someone else
            saved the preset since it was read). The answer is shown beside the one before, in
            the language asked for. The record says which preset, version and language
            answered: a warm Lambda function keeps a preset it has read for about a minute, so
            right after an edit an answer may still come from the previous version (the note
            under it says so).
        """),
        code("""
            saved = notebook.edit_preset(
                cfg, aws, "my-class", temperature=0.9, max_new_tokens=120,
                instruction="You are a friendly guide for children. In 2 short sentences say "
                            "what this place is and one fun fact about it.",
            )
            print(f"my-class saved: version {saved['version']}")
            after = notebook.compare_answers(cfg, aws, photo, "my-class", language="French",
                                             previous=before)
            after
        """),
        md("""
            ### The editor

            The same with widgets: pick a preset, move the sliders (their ranges are what the
            active profile's container accepts), edit the instruction and the examples'
            answers, pick the answer language, then **Save** (checked first: a refused field is
            named here, and nothing is written) and **Ask with this preset**: the new answer
            appears beside the previous one. `visual-tourism presets list|show|set|delete` does
            the same from a terminal.
        """),
        code("""
            editor = notebook.preset_editor(cfg, aws, photo, preset="my-class")
            editor
        """),
    ],
    "07_cleanup": [
        md(f"""
            # 7. Clean up

            Removes everything the previous notebooks created and checks, resource by resource,
            that nothing billable is left. Safe to run twice, or after a deployment that
            stopped halfway: what is already gone counts as done, and only resources carrying
            this stack's tag are touched.

            1. Keep the bucket?
            2. Remove the stack
            3. Confirm that nothing billable is left

            {where_next("06_demo", None)}
        """),
        SETUP_TEXT,
        setup("notebook", "stack"),
        md("""
            ## 1. Keep the bucket?

            `False` deletes the bucket with every photo and result in it. `True` keeps it
            (storage costs cents per GB-month) and removes everything else.
        """),
        code("keep_bucket = False"),
        md("""
            ### The stop deadline and the cost so far

            A deadline set with `up --stop-after 3h` (or `stop_after` in the settings) deletes
            the endpoint (real-time) or scales it to zero (async) at its time even if nobody
            runs this notebook; clean-up removes it with the rest. The cost so far is an
            estimate from list prices: the endpoint's instance-hours since it was created (its
            initial instance count, then each change in its scaling history). Where that history
            is incomplete it says "at least"; Cost Explorer has the billed figure.
        """),
        code("""
            notebook.show_deadline(cfg, aws)
            notebook.show_cost_so_far(cfg, aws)
        """),
        md("""
            ## 2. Remove the stack

            Newest first: the trigger (no upload starts new work), the function and its log
            group, autoscaling, the endpoint (the part billed by the hour; deleting it takes a
            minute or two on AWS), its models and configurations, the roles, the presets table
            with your edits, then the bucket.
        """),
        code("""
            removed = stack.down(cfg, aws, delete_bucket=not keep_bucket, progress=notebook.say)
            print(f"removed {len(removed)} resource(s)" if removed else "nothing left to remove")
        """),
        md("""
            ## 3. Confirm that nothing billable is left

            Asks AWS directly, not the local record: no endpoint, model, endpoint configuration,
            autoscaling target, function, log group, role or presets table of this stack, and
            no bucket unless kept. Fails, listing what remains, if anything does. The settings
            file from `01_setup` stays: `notebook.settings_path()` says where it is.
        """),
        code("notebook.confirm_clean(cfg, aws, keep_bucket=keep_bucket)"),
    ],
}


_NOTEBOOK_SPAN = re.compile(r"`(\d\d_[a-z_]+)(?:\.ipynb)?`")


def link_notebooks(text: str) -> str:
    """Each `NN_name` code span that names a notebook of this folder becomes a link to it."""
    def link(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"[{name}]({name}.ipynb)" if name in NOTEBOOKS else match.group(0)

    return _NOTEBOOK_SPAN.sub(link, text)


def build(name: str, cells: list[Cell]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, (kind, source) in enumerate(cells):
        source = source.replace(NOTEBOOK_NAME, name)
        if kind == "markdown":
            source = link_notebooks(source)
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        # Fixed ids keep the files identical from one build to the next.
        nb.cells.append(make(source, id=f"{name.replace('_', '-')}-{i:02d}"))
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


# -- the check: nothing account- or machine-specific, no outputs --------------------------------

_FORBIDDEN = {
    "a 12-digit AWS account ID": re.compile(r"(?<!\d)\d{12}(?!\d)"),
    "an ARN with an account ID": re.compile(r"arn:aws[\w-]*:[\w-]+:[\w-]*:\d{12}:"),
    "an AWS access key ID": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "an AWS secret key": re.compile(r"aws_secret_access_key\s*[=:]\s*\S{20,}", re.IGNORECASE),
    "a Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a home or machine path": re.compile(
        r"(?:/home/|/Users/|\\Users\\|/root/|/private/var/|/var/folders/|/tmp/|/opt/ml/)"
    ),
}
_ALLOWED_METADATA = {"kernelspec", "language_info"}


def problems(nb: dict[str, Any]) -> list[str]:
    """What would make this notebook unfit to commit; an empty list if nothing."""
    found: list[str] = []
    extra = set(nb.get("metadata", {})) - _ALLOWED_METADATA
    if extra:
        found.append(f"notebook metadata {sorted(extra)} (widget state, run details)")
    for i, cell in enumerate(nb.get("cells", [])):
        where = f"cell {i}"
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                found.append(f"{where}: has outputs")
            if cell.get("execution_count") is not None:
                found.append(f"{where}: has an execution count")
        if cell.get("metadata"):
            found.append(f"{where}: has metadata {sorted(cell['metadata'])}")
        if cell.get("attachments"):
            found.append(f"{where}: has attachments")
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        for what, pattern in _FORBIDDEN.items():
            if pattern.search(text):
                found.append(f"{where}: contains {what}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; fail if a notebook is stale or unfit to commit")
    args = parser.parse_args(argv)
    failed = False
    expected = {f"{name}.ipynb": render(build(name, cells)) for name, cells in NOTEBOOKS.items()}
    for filename, text in expected.items():
        path = HERE / filename
        if not args.check:
            path.write_text(text)
            continue
        if not path.is_file() or path.read_text() != text:
            print(f"{filename}: differs from build_notebooks.py (run it to rebuild)")
            failed = True
    for path in sorted(HERE.glob("*.ipynb")):
        if path.name not in expected:
            print(f"{path.name}: not produced by build_notebooks.py")
            failed = True
        for problem in problems(nbformat.reads(path.read_text(), as_version=4)):
            print(f"{path.name}: {problem}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

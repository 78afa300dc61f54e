"""A local AWS for the suite's tests and demo: moto's server plus a small compatibility layer.

moto (pinned in the Makefile) serves SageMaker, DynamoDB, S3, CloudWatch and Application Auto
Scaling. This layer sits in front of it, in the same process, and adds what the Rust SDK and the
suite need that moto does not do:

* CloudWatch over Smithy RPC v2 CBOR. aws-sdk-cloudwatch (1.100+) sends
  `POST /service/GraniteServiceVersion20100801/operation/<Op>` with CBOR bodies; moto only speaks
  JSON 1.0 and query. Requests are translated to JSON 1.0, answered by moto, and the answer is
  re-encoded as CBOR, typed by botocore's model of the output shape (timestamps as tag 1).
* SageMaker UpdateEndpoint, modelled on the real service: the endpoint goes Updating, shows a
  PendingDeploymentSummary, and after `--update-seconds` (or POST /_localaws/settle) ends
  InService on the new config -- or, if an alarm named in the AutoRollbackConfiguration is in
  ALARM, InService on the *old* config with no error (a silent guardrail rollback).
  LastDeploymentConfig is shown by DescribeEndpoint. Updating an endpoint that is not InService
  is refused with SageMaker's ValidationException.
* Endpoint configs keep every field: moto drops shadow variants, the execution role, VPC,
  network isolation, explainer and metrics configs; they are kept here and described back, so a
  copy of a config can be checked field by field.
* A call log: every request is recorded with its access key, service, operation and the
  resource it names, so a test can count exactly the mutations its own handler made
  (GET /_localaws/calls?access_key=...). With --call-log FILE, each call a function made (its
  name is in the user agent, `app/<function>`) is also appended to FILE as one JSON line with
  what IAM would judge it by: region, the request members that name resources, roles and keys,
  the tags of the resources it names (read before the call), and the KMS key S3 used. The
  IAM check (tests/iam/check.py) evaluates the template's policies against them.
* Alarm actions: an alarm whose state changes notifies the SNS topics among its AlarmActions
  (into ALARM) or OKActions (back to OK), as CloudWatch does; moto keeps the actions but never
  runs them. EventBridge rules deliver to SNS topics too (moto delivers only to SQS, logs and
  buses). With moto's SNS-to-SQS delivery and EventBridge's SQS targets, a test reads what a
  person would be sent (POST /_localaws/queue makes a queue, GET /_localaws/messages drains it).
* Fault and latency injection for benchmarks and fault tests (POST /_localaws/faults): latency,
  throttling, or a chosen error (code and HTTP status, or a bare status without a code).
* SageMaker's patterns for tags and model package metadata (letters, numbers, spaces and
  `_.:/=+-@`; lengths) are enforced, as SageMaker refuses them; moto takes any text.
* UpdateModelPackage keeps the metadata and approval description it does not name (moto drops
  them).
* CreateModelPackage is idempotent on its ClientToken; a training job ends (POST
  /_localaws/training-jobs) with its final metrics and failure reason.
* SageMaker Runtime InvokeEndpoint (moto answers any name with static data): only an InService
  or Updating endpoint serves, a TargetVariant must be one of its variants, and the answer is
  what POST /_localaws/invocations set for the endpoint's variant, else for the model package the
  variant's model was made from (a version answers the same wherever it serves), else for the
  endpoint; a status other than 200
  comes back as SageMaker's 424 ModelError carrying it.

Run: python localaws.py --port 0  -> prints `READY http://127.0.0.1:<port>` on stdout.
With --exit-with-stdin the server stops when its stdin closes, so a test process that spawned it
never leaves it behind.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import os
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

import botocore.session
import cbor2
from moto.cloudwatch.models import cloudwatch_backends
from moto.core import DEFAULT_ACCOUNT_ID
# moto keeps naive UTC times on its resources; ours must compare with them.
from moto.core.utils import utcnow as moto_utcnow
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.sagemaker.models import sagemaker_backends
from werkzeug.serving import make_server

CBOR_PATH = re.compile(r"^/service/(?P<service>[^/]+)/operation/(?P<op>[^/]+)$")
# SageMaker Runtime's InvokeEndpoint (REST-JSON, signed as "sagemaker").
INVOCATIONS = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
APP = re.compile(r"(?:^|\s)app/(?P<name>[A-Za-z0-9._-]+)")
CREDENTIAL = re.compile(r"Credential=(?P<key>[^/]+)/[^/]+/(?P<region>[^/]+)/(?P<service>[^/]+)/")
# Request members that name the resource a call acts on; recorded in the call log.
RESOURCE_KEYS = (
    "EndpointName",
    "EndpointConfigName",
    "ModelPackageName",
    "ModelPackageArn",
    "ModelPackageGroupName",
    "ModelName",
    "TrainingJobName",
    "TableName",
    "AlarmName",
    "AlarmNames",
    "ResourceId",
    "ResourceArn",
    "Namespace",
)
# Request members the IAM check needs besides the resource: roles passed, keys used, tags set or
# removed, the bus events go to, what a scaling call acts on.
IAM_KEYS = (
    "ExecutionRoleArn",
    "RoleArn",
    "KmsKeyId",
    "ServiceNamespace",
    "ScalableDimension",
    "PolicyType",
    "TagKeys",
    "ResourceARN",
)
# CreateEndpointConfig members moto does not keep.
CONFIG_EXTRAS = (
    "ShadowProductionVariants",
    "ExecutionRoleArn",
    "VpcConfig",
    "EnableNetworkIsolation",
    "ExplainerConfig",
    "MetricsConfig",
    "AsyncInferenceConfig",
)
# Operations that change nothing: everything else counts as a mutation.
READ_PREFIXES = ("Describe", "List", "Get", "Query", "Scan", "BatchGet", "Search", "Head")

_botocore = botocore.session.get_session()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- CBOR <-> JSON


def to_json_value(value: Any) -> Any:
    """A decoded CBOR request body as the JSON moto expects (timestamps as epoch seconds)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    return value


def to_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def shaped(value: Any, shape: Any) -> Any:
    """A JSON value re-typed by its botocore shape, ready to encode as Smithy CBOR."""
    if value is None or shape is None:
        return value
    kind = shape.type_name
    if kind == "structure":
        return {
            k: shaped(v, shape.members.get(k)) for k, v in value.items() if v is not None
        }
    if kind == "list":
        return [shaped(v, shape.member) for v in value]
    if kind == "map":
        return {k: shaped(v, shape.value) for k, v in value.items()}
    if kind == "timestamp":
        return to_timestamp(value)
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long"):
        return int(value)
    if kind == "blob":
        return base64.b64decode(value)
    return value


# --------------------------------------------------------------------------- SageMaker updates


@dataclass
class Deployment:
    """One UpdateEndpoint in flight or finished, as the layer models it."""

    account: str
    region: str
    endpoint: str
    old_config: str
    new_config: str
    deployment_config: dict[str, Any]
    started: float
    due: float
    outcome: str | None = None  # "Succeeded" | "RolledBack"
    firing_alarms: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "old_config": self.old_config,
            "new_config": self.new_config,
            "outcome": self.outcome,
            "firing_alarms": self.firing_alarms,
            "deployment_config": self.deployment_config,
        }


# SageMaker's patterns for tag and customer metadata text (moto checks neither): letters,
# numbers, spaces and `_ . : / = + - @`; tag values up to 256, metadata keys 1-128 and values 1-256.
SAGEMAKER_TEXT = re.compile(r"^[\w .:/=+\-@]*$")
TEXT_CHECKED = {"CreateTrainingJob", "AddTags", "CreateModelPackage", "UpdateModelPackage", "CreateEndpoint",
                "CreateEndpointConfig", "CreateModel"}


def sagemaker_text_refused(request: dict[str, Any]) -> str | None:
    """Why SageMaker would refuse the request's tags or metadata, if it would."""
    for tag in request.get("Tags") or []:
        key, value = tag.get("Key", ""), tag.get("Value", "")
        if not SAGEMAKER_TEXT.match(key) or not 1 <= len(key) <= 128:
            return f"1 validation error detected: Value '{key}' at 'tags.key' failed to satisfy constraint"
        if not SAGEMAKER_TEXT.match(value) or len(value) > 256:
            return f"1 validation error detected: Value '{value}' at 'tags.value' failed to satisfy constraint"
    for key, value in (request.get("CustomerMetadataProperties") or {}).items():
        if not SAGEMAKER_TEXT.match(key) or not 1 <= len(key) <= 128:
            return f"Value '{key}' at 'customerMetadataProperties' failed to satisfy constraint: Map keys"
        if not SAGEMAKER_TEXT.match(value) or not 1 <= len(value) <= 256:
            return f"Value '{value}' at 'customerMetadataProperties.{key}' failed to satisfy constraint"
    return None


class ValidationException(Exception):
    pass


def deliver_rules_to_sns() -> None:
    """EventBridge rules with SNS targets publish the event to the topic, as EventBridge does."""
    from moto.events.models import Rule
    from moto.sns.models import sns_backends

    original = Rule.send_to_targets

    def send_to_targets(self: Any, event: Any, transform_input: bool = True) -> None:
        topics = [t for t in self.targets if ":sns:" in t["Arn"]]
        if topics and self.event_pattern.matches_event(event):
            for t in topics:
                region = t["Arn"].split(":")[3]
                sns_backends[DEFAULT_ACCOUNT_ID][region].publish(message=json.dumps(event), arn=t["Arn"])
        others = [t for t in self.targets if ":sns:" not in t["Arn"]]
        if others:
            kept, self.targets = self.targets, others
            try:
                original(self, event, transform_input)
            finally:
                self.targets = kept

    Rule.send_to_targets = send_to_targets


deliver_rules_to_sns()


class Endpoints:
    """UpdateEndpoint and its asynchronous completion, on top of moto's SageMaker backend."""

    def __init__(self, update_seconds: float) -> None:
        self.update_seconds = update_seconds
        self.deployments: list[Deployment] = []
        self.lock = threading.Lock()

    @staticmethod
    def refuse_if_autoscaled(account: str, region: str, endpoint: str, new_config: Any) -> None:
        """SageMaker refuses an update that removes, renames or changes the instance type of a
        variant registered with Application Auto Scaling: it must be deregistered first."""
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        scaling = applicationautoscaling_backends[account][region]
        registered = {
            resource_id.split("/variant/", 1)[1]
            for targets in scaling.targets.values()
            for resource_id in targets
            if resource_id.startswith(f"endpoint/{endpoint}/variant/")
        }
        if not registered:
            return
        sm = sagemaker_backends[account][region]
        current = sm.endpoint_configs[sm.endpoints[endpoint].endpoint_config_name]
        types = {v["VariantName"]: v.get("InstanceType") for v in current.production_variants}
        new = {v["VariantName"]: v.get("InstanceType") for v in new_config.production_variants}
        for variant in registered:
            if variant not in new or new[variant] != types.get(variant):
                raise ValidationException(
                    f"The variant {variant} of endpoint {endpoint} is registered for automatic scaling: "
                    "deregister it before an update that changes its instance type or removes it."
                )

    @staticmethod
    def refuse_guardrails_across_variants(backend: Any, endpoint: Any, new_config: Any, deployment_config: Any) -> None:
        """SageMaker's deployment guardrails (blue/green with traffic shifting, rolling) need the
        new config to have the old one's variant names; a canary's second variant cannot go live,
        or go away, through them."""
        if not deployment_config or not (
            "BlueGreenUpdatePolicy" in deployment_config or "RollingUpdatePolicy" in deployment_config
        ):
            return
        old = backend.endpoint_configs[endpoint.endpoint_config_name]
        names = lambda c: sorted(v["VariantName"] for v in c.production_variants)  # noqa: E731
        if names(old) != names(new_config):
            raise ValidationException(
                "When doing a blue/green or rolling deployment, the new endpoint configuration must "
                f"have the same variant names as the old one: {names(old)} != {names(new_config)}."
            )

    def update(self, account: str, region: str, request: dict[str, Any]) -> dict[str, Any]:
        backend = sagemaker_backends[account][region]
        name = request.get("EndpointName")
        config = request.get("EndpointConfigName")
        endpoint = backend.endpoints.get(name)
        arn = f"arn:aws:sagemaker:{region}:{account}:endpoint/{str(name).lower()}"
        if endpoint is None:
            raise ValidationException(f"Could not find endpoint '{arn}'.")
        if config not in backend.endpoint_configs:
            raise ValidationException(
                f"Could not find endpoint configuration '{arn.replace(':endpoint/', ':endpoint-config/')}'."
            )
        with self.lock:
            if endpoint.endpoint_status != "InService":
                raise ValidationException(f'Cannot update in-progress endpoint "{endpoint.arn}".')
            self.refuse_if_autoscaled(account, region, name, backend.endpoint_configs[config])
            deployment_config = request.get("DeploymentConfig")
            if deployment_config is None and request.get("RetainDeploymentConfig"):
                deployment_config = getattr(endpoint, "last_deployment_config", None)
            self.refuse_guardrails_across_variants(backend, endpoint, backend.endpoint_configs[config], deployment_config)
            now = time.time()
            self.deployments.append(
                Deployment(
                    account=account,
                    region=region,
                    endpoint=name,
                    old_config=endpoint.endpoint_config_name,
                    new_config=config,
                    deployment_config=deployment_config or {},
                    started=now,
                    due=now + self.update_seconds,
                )
            )
            endpoint.endpoint_status = "Updating"
            endpoint.last_modified_time = moto_utcnow()
            endpoint.pending_deployment_summary = {
                "EndpointConfigName": config,
                "StartTime": utcnow(),
            }
            if deployment_config:
                endpoint.last_deployment_config = deployment_config
        return {"EndpointArn": endpoint.arn}

    def settle(self, endpoint: str | None = None, force: bool = False) -> list[Deployment]:
        """Finish every update that is due (or all of them, with force)."""
        finished = []
        now = time.time()
        with self.lock:
            for d in self.deployments:
                if d.outcome is None and (force or d.due <= now):
                    if endpoint is None or d.endpoint == endpoint:
                        self._finish(d)
                        finished.append(d)
        return finished

    def _finish(self, d: Deployment) -> None:
        backend = sagemaker_backends[d.account][d.region]
        ep = backend.endpoints.get(d.endpoint)
        if ep is None:  # deleted while updating
            d.outcome = "Deleted"
            return
        alarms = cloudwatch_backends[d.account][d.region].alarms
        watched = [
            a.get("AlarmName")
            for a in d.deployment_config.get("AutoRollbackConfiguration", {}).get("Alarms", [])
        ]
        d.firing_alarms = [a for a in watched if a in alarms and alarms[a].state_value == "ALARM"]
        if d.firing_alarms or d.new_config not in backend.endpoint_configs:
            d.outcome = "RolledBack"  # SageMaker keeps the old fleet and reports no error
        else:
            d.outcome = "Succeeded"
            ep.endpoint_config_name = d.new_config
            ep.production_variants = ep._process_production_variants(
                backend.endpoint_configs[d.new_config].production_variants
            )
        ep.endpoint_status = "InService"
        ep.last_modified_time = moto_utcnow()
        if hasattr(ep, "pending_deployment_summary"):
            del ep.pending_deployment_summary


def s3_operation(environ: dict[str, Any]) -> str:
    """S3 speaks REST: the operation is the method, the path (bucket or object) and the query."""
    method = environ.get("REQUEST_METHOD", "")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    on_object = "/" in environ.get("PATH_INFO", "").strip("/")
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload" if "uploadId" in query else "PostObject"
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        return "PutObject" if on_object else "CreateBucket"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject" if on_object else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if on_object else "HeadBucket"
    if method == "GET":
        if on_object:
            return "ListParts" if "uploadId" in query else "GetObject"
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects" if not query else "GetBucket"
    return f"{method} {environ.get('PATH_INFO')}"


# --------------------------------------------------------------------------- the app


@dataclass
class Call:
    access_key: str
    service: str
    operation: str
    resource: str | None
    status: int = 0
    function: str | None = None
    region: str = "us-east-1"
    facts: dict[str, Any] = field(default_factory=dict)

    def log_line(self) -> str:
        return json.dumps(
            {
                "access_key": self.access_key,
                "function": self.function,
                "service": self.service,
                "operation": self.operation,
                "region": self.region,
                "status": self.status,
                "facts": self.facts,
            },
            sort_keys=True,
        )

    @property
    def mutating(self) -> bool:
        return not self.operation.startswith(READ_PREFIXES)


class Faults:
    """Latency, throttling or an error injected before a request reaches moto: for every caller
    (the bench's and the demo's), or for one access key (each test its own, so tests running at
    once never reset each other's)."""

    def __init__(self) -> None:
        self.latency_ms = 0.0
        self.throttle_share = 0.0
        # An error answered instead of the call (JSON services): {"code": ..., "status": 400}.
        self.error: dict[str, Any] | None = None
        self.operations: set[str] = set()  # empty: every operation
        self.access_key: str | None = None  # None: every caller
        self.random = random.Random(7)

    def applies(self, op: str, key: str) -> bool:
        return (not self.operations or op in self.operations) and self.access_key in (None, key)


def request_facts(service: str, environ: dict[str, Any], body: bytes, cbor: bool) -> dict[str, Any]:
    """What IAM judges a call by, from its request: the members that name resources, roles and
    keys; for S3 the bucket, key and requested KMS key."""
    if service == "s3":
        bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
        facts: dict[str, Any] = {"Bucket": bucket, "Key": key}
        kms = environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID")
        if kms:
            facts["SSEKMSKeyId"] = kms
        return facts
    try:
        payload = cbor2.loads(body) if cbor else json.loads(body) if body else {}
    except Exception:
        return {}
    if not isinstance(payload, dict):
        return {}
    facts = {k: to_json_value(payload[k]) for k in RESOURCE_KEYS + IAM_KEYS if k in payload}
    if isinstance(payload.get("Tags"), list):
        facts["TagKeys"] = [t.get("Key") for t in payload["Tags"] if isinstance(t, dict)]
    if isinstance(payload.get("Entries"), list):
        facts["EventBusNames"] = [e.get("EventBusName", "default") for e in payload["Entries"] if isinstance(e, dict)]
    for member in ("OutputDataConfig", "ResourceConfig"):
        if isinstance(payload.get(member), dict) and payload[member].get("KmsKeyId"):
            facts.setdefault("KmsKeyIds", []).append(payload[member]["KmsKeyId"])
    return facts


def sagemaker_facts(account: str, region: str, facts: dict[str, Any]) -> dict[str, Any]:
    """Tags of the SageMaker resources a call names, as they are before it (IAM's
    aws:ResourceTag), and the KMS key of the config an endpoint is created or updated to."""
    backend = sagemaker_backends[account][region]
    found: dict[str, Any] = {}
    named = [
        ("endpoint", backend.endpoints, facts.get("EndpointName")),
        ("endpoint-config", backend.endpoint_configs, facts.get("EndpointConfigName")),
        ("model", backend._models, facts.get("ModelName")),
    ]
    arn = str(facts.get("ResourceArn") or "")
    if ":" in arn and "/" in arn:
        kind, _, name = arn.split(":", 5)[-1].partition("/")
        named.append((kind, {"endpoint": backend.endpoints, "endpoint-config": backend.endpoint_configs, "model": backend._models}.get(kind, {}), name))
    tags: dict[str, dict[str, str]] = {}
    for kind, resources, name in named:
        resource = resources.get(name) if isinstance(name, str) else None
        if resource is not None:
            tags[kind] = {t["Key"]: t["Value"] for t in getattr(resource, "tags", None) or []}
    if tags:
        found["ResourceTags"] = tags
    config = backend.endpoint_configs.get(facts.get("EndpointConfigName") or "")
    if config is not None and getattr(config, "kms_key_id", None):
        found["ConfigKmsKeyId"] = config.kms_key_id
    return found


class LocalAws:
    def __init__(self, update_seconds: float, call_log: str | None = None) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.endpoints = Endpoints(update_seconds)
        self.calls: list[Call] = []
        self.calls_lock = threading.Lock()
        self.faults = Faults()
        self.faults_by_key: dict[str, Faults] = {}
        self.invocations: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.package_tokens: dict[tuple[str, str | None, str], str] = {}
        self.cloudwatch_model = _botocore.get_service_model("cloudwatch")
        self.call_log = open(call_log, "a", buffering=1) if call_log else None

    # WSGI entry point
    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_localaws/"):
            return self.control(environ, start_response, path)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)

        key, region, service = self.identity(environ)
        cbor = CBOR_PATH.match(path)
        invocation = INVOCATIONS.match(path) if service == "sagemaker" else None
        op = "InvokeEndpoint" if invocation else self.operation(environ, body, cbor)
        resource = unquote(invocation.group("name")) if invocation else self.resource(environ, body, cbor)
        call = Call(key, service, op, resource)
        agent = f"{environ.get('HTTP_USER_AGENT', '')} {environ.get('HTTP_X_AMZ_USER_AGENT', '')}"
        app = APP.search(agent)
        if app and self.call_log:
            call.function, call.region = app.group("name"), region
            call.facts = request_facts(service, environ, body, cbor is not None)
            if invocation:
                call.facts = {"EndpointName": resource}
            if service == "sagemaker":
                call.facts.update(sagemaker_facts(DEFAULT_ACCOUNT_ID, region, call.facts))
        with self.calls_lock:
            self.calls.append(call)
        try:
            return self.dispatch(environ, start_response, body, call, key, region, service, cbor, op)
        finally:
            if call.function and self.call_log:
                with self.calls_lock:
                    self.call_log.write(call.log_line() + "\n")

    def dispatch(
        self,
        environ: dict[str, Any],
        start_response: Callable,
        body: bytes,
        call: Call,
        key: str,
        region: str,
        service: str,
        cbor: re.Match | None,
        op: str,
    ) -> Any:
        self.endpoints.settle()
        faults = self.faults_by_key.get(key, self.faults)
        if faults.applies(op, key):
            if faults.latency_ms:
                time.sleep(faults.latency_ms / 1000.0)
            if faults.throttle_share and faults.random.random() < faults.throttle_share:
                call.status = 400
                return self.throttled(service, cbor is not None, start_response)
            if faults.error and cbor is None:
                status = int(faults.error.get("status", 400))
                call.status = status
                code = faults.error.get("code")
                message = faults.error.get("message", "injected by the local AWS")
                if service == "s3":
                    xml = f"<Error><Code>{code or 'InternalError'}</Code><Message>{message}</Message></Error>"
                    start_response(f"{status} Injected", [("Content-Type", "application/xml")])
                    return [xml.encode()]
                body = {"message": message}
                if code:
                    body["__type"] = code
                return self.json_response(start_response, f"{status} Injected", body)

        def recording_start_response(status: str, headers: list, *rest: Any) -> Any:
            call.status = int(status.split(" ", 1)[0])
            for name, value in headers:
                # The key S3 encrypted or decrypted the object with (a bucket's default too).
                if name.lower() == "x-amz-server-side-encryption-aws-kms-key-id" and call.function:
                    call.facts["SSEKMSKeyId"] = value
            return start_response(status, headers, *rest)

        if op == "SetAlarmState" and service == "monitoring":
            return self.set_alarm_state(environ, region, body, cbor, recording_start_response)
        if cbor:
            return self.cloudwatch_cbor(environ, body, cbor.group("op"), recording_start_response)
        if service == "sagemaker" and op in TEXT_CHECKED:
            refused = sagemaker_text_refused(json.loads(body or b"{}"))
            if refused:
                call.status = 400
                return self.json_response(
                    recording_start_response, "400 Bad Request", {"__type": "ValidationException", "message": refused}
                )
        if op == "InvokeEndpoint" and service == "sagemaker":
            return self.invoke_endpoint(environ, region, call.resource or "", recording_start_response)
        if op == "UpdateEndpoint" and service == "sagemaker":
            return self.update_endpoint(region, body, recording_start_response)
        if op == "CreateTrainingJob" and service == "sagemaker":
            return self.create_training_job(environ, region, body, recording_start_response)
        if op == "CreateModelPackage" and service == "sagemaker":
            return self.create_model_package(environ, region, body, recording_start_response)
        if op == "UpdateModelPackage" and service == "sagemaker":
            return self.update_model_package(environ, body, recording_start_response)
        if op == "CreateEndpointConfig" and service == "sagemaker":
            return self.create_endpoint_config(environ, region, body, recording_start_response)
        if op == "UpdateEndpointWeightsAndCapacities" and service == "sagemaker":
            answer = self.moto(environ, recording_start_response)
            self.touch_endpoint(region, json.loads(body or b"{}").get("EndpointName", ""))
            return answer
        return self.moto(environ, recording_start_response)

    def invoke_endpoint(self, environ: dict[str, Any], region: str, name: str, start_response: Callable) -> Any:
        """InvokeEndpoint as SageMaker Runtime answers it: only an InService or Updating endpoint
        serves, a TargetVariant must be one of its variants, and a container's status other
        than 200 comes back as a 424 ModelError carrying it. The answer is what the test set for
        the endpoint and variant, else for the model package the variant's model was made from
        (what that version answers, wherever it serves), else for the endpoint (POST
        /_localaws/invocations), else 200 with `{}`."""
        backend = sagemaker_backends[DEFAULT_ACCOUNT_ID][region]

        def refused(message: str) -> Any:
            start_response("400 Bad Request", [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ValidationError")])
            return [json.dumps({"message": message}).encode()]

        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            return refused(f"Endpoint {name} of account {DEFAULT_ACCOUNT_ID} not found.")
        if endpoint.endpoint_status not in ("InService", "Updating"):
            return refused(f"Endpoint {name} is {endpoint.endpoint_status}, not InService.")
        config = backend.endpoint_configs[endpoint.endpoint_config_name]
        variants = [v["VariantName"] for v in config.production_variants]
        target = environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_VARIANT")
        if target and target not in variants:
            return refused(f"Variant {target} not found for endpoint {name}.")
        variant = target or variants[0]
        model_name = next(v.get("ModelName") for v in config.production_variants if v["VariantName"] == variant)
        model = backend._models.get(model_name)
        package = ((model.primary_container or {}).get("ModelPackageName") if model else None) or ""
        answer = (
            self.invocations.get((name, variant))
            or self.invocations.get(("package", package.lower()))
            or self.invocations.get((name, None))
            or {}
        )
        status = int(answer.get("status", 200))
        text = answer.get("body", "{}")
        if status == 200:
            content_type = answer.get("content_type", "application/json")
            start_response("200 OK", [("Content-Type", content_type), ("x-Amzn-Invoked-Production-Variant", variant)])
            return [text.encode()]
        error = {
            "message": f"Received server error ({status}) from {variant} with message \"{text}\".",
            "OriginalStatusCode": status,
            "OriginalMessage": text,
            "LogStreamArn": f"arn:aws:logs:{region}:{DEFAULT_ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{name}",
        }
        start_response("424 Failed Dependency", [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ModelError")])
        return [json.dumps(error).encode()]

    def set_alarm_state(
        self, environ: dict[str, Any], region: str, body: bytes, cbor: re.Match | None, start_response: Callable
    ) -> Any:
        """SetAlarmState, then the alarm's actions as CloudWatch runs them on a state change."""
        if cbor:
            name = cbor2.loads(body).get("AlarmName") if body else None
        elif environ.get("HTTP_X_AMZ_TARGET"):
            name = json.loads(body or b"{}").get("AlarmName")
        else:
            name = parse_qs(body.decode(errors="replace")).get("AlarmName", [None])[0]
        alarms = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region].alarms
        before = alarms[name].state_value if name in alarms else None
        answer = (
            self.cloudwatch_cbor(environ, body, cbor.group("op"), start_response)
            if cbor
            else self.moto(environ, start_response)
        )
        alarm = alarms.get(name)
        if alarm is not None and alarm.state_value != before:
            actions = {"ALARM": alarm.alarm_actions, "OK": alarm.ok_actions}.get(alarm.state_value, [])
            self.notify(region, alarm, before, actions or [])
        return answer

    @staticmethod
    def notify(region: str, alarm: Any, before: str | None, actions: list[str]) -> None:
        from moto.sns.models import sns_backends

        message = json.dumps(
            {
                "AlarmName": alarm.name,
                "AlarmDescription": alarm.description,
                "NewStateValue": alarm.state_value,
                "OldStateValue": before,
                "NewStateReason": alarm.state_reason,
                "Region": region,
            }
        )
        for arn in actions:
            if ":sns:" in arn:
                topic_region = arn.split(":")[3]
                subject = f"{alarm.state_value}: \"{alarm.name}\""[:99]
                sns_backends[DEFAULT_ACCOUNT_ID][topic_region].publish(message=message, arn=arn, subject=subject)

    @staticmethod
    def touch_endpoint(region: str, name: str) -> None:
        """SageMaker sets LastModifiedTime when capacity changes (autoscaling, a person); moto does not."""
        endpoint = sagemaker_backends[DEFAULT_ACCOUNT_ID][region].endpoints.get(name)
        if endpoint is not None:
            endpoint.last_modified_time = moto_utcnow()

    # ---- request identity
    @staticmethod
    def identity(environ: dict[str, Any]) -> tuple[str, str, str]:
        m = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        if not m:
            return ("anonymous", "us-east-1", "unknown")
        return (m.group("key"), m.group("region"), m.group("service"))

    @staticmethod
    def operation(environ: dict[str, Any], body: bytes, cbor: re.Match | None) -> str:
        if cbor:
            return cbor.group("op")
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return target.rsplit(".", 1)[-1]
        if body.startswith(b"Action=") or b"&Action=" in body:
            return parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
        return s3_operation(environ)

    @staticmethod
    def resource(environ: dict[str, Any], body: bytes, cbor: re.Match | None) -> str | None:
        try:
            payload = cbor2.loads(body) if cbor else json.loads(body) if body else {}
        except Exception:
            return None
        if not isinstance(payload, dict):
            return None
        for k in RESOURCE_KEYS:
            if k in payload:
                v = payload[k]
                return ",".join(v) if isinstance(v, list) else str(v)
        return None

    # ---- CloudWatch over Smithy RPC v2 CBOR
    def cloudwatch_cbor(self, environ: dict[str, Any], body: bytes, op: str, start_response: Callable) -> Any:
        request = to_json_value(cbor2.loads(body)) if body else {}
        data = json.dumps(request).encode()
        environ = dict(environ)
        environ.update(
            {
                "PATH_INFO": "/",
                "CONTENT_TYPE": "application/x-amz-json-1.0",
                "CONTENT_LENGTH": str(len(data)),
                "HTTP_X_AMZ_TARGET": f"GraniteServiceVersion20100801.{op}",
                "wsgi.input": io.BytesIO(data),
            }
        )
        status, headers, out = self.call_moto(environ)
        code = int(status.split(" ", 1)[0])
        payload = json.loads(out) if out.strip() else {}
        if code < 300:
            shape = self.cloudwatch_model.operation_model(op).output_shape
            payload = shaped(payload, shape) if shape is not None else {}
        else:
            error = str(payload.get("__type", "InternalFailure")).split("#")[-1]
            payload = {
                "__type": f"com.amazonaws.cloudwatch#{error}",
                "message": payload.get("message") or payload.get("Message", ""),
            }
        encoded = cbor2.dumps(payload, datetime_as_timestamp=True)
        request_id = dict(headers).get("x-amzn-RequestId", "localaws")
        start_response(
            status,
            [
                ("Content-Type", "application/cbor"),
                ("smithy-protocol", "rpc-v2-cbor"),
                ("x-amzn-RequestId", request_id),
                ("Content-Length", str(len(encoded))),
            ],
        )
        return [encoded]

    def call_moto(self, environ: dict[str, Any]) -> tuple[str, list, bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, *rest: Any) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        chunks = self.moto(environ, capture)
        try:
            out = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return captured["status"], captured["headers"], out

    # ---- SageMaker UpdateEndpoint
    def create_training_job(self, environ: dict[str, Any], region: str, body: bytes, start_response: Callable) -> Any:
        """moto finishes a training job as it creates it; SageMaker's run for hours. New jobs are
        InProgress here until the control API says otherwise."""
        result = self.moto(environ, start_response)
        name = json.loads(body or b"{}").get("TrainingJobName")
        job = sagemaker_backends[DEFAULT_ACCOUNT_ID][region].training_jobs.get(name)
        if job is not None and getattr(job, "_localaws_new", True):
            job._localaws_new = False
            job.training_job_status = "InProgress"
        return result

    def create_endpoint_config(self, environ: dict[str, Any], region: str, body: bytes, start_response: Callable) -> Any:
        """moto's CreateEndpointConfig, then the members it drops, set on its config so that
        DescribeEndpointConfig answers them (its answer is made of the object's attributes)."""
        result = self.moto(environ, start_response)
        request = json.loads(body or b"{}")
        config = sagemaker_backends[DEFAULT_ACCOUNT_ID][region].endpoint_configs.get(request.get("EndpointConfigName"))
        if config is not None:
            # moto keeps `arn` as a 1-tuple, which its tagging API then prints as the ARN.
            config.arn = config.endpoint_config_arn
            for key in CONFIG_EXTRAS:
                if key in request:
                    attribute = re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
                    setattr(config, attribute, request[key])
        return result

    @staticmethod
    def endpoints_named(name: str, region: str | None) -> list[Any]:
        """Endpoints of that name, in one region or in every one (tests in their own regions
        reuse names)."""
        found = []
        for regions in sagemaker_backends.values():
            for r, backend in regions.items():
                ep = backend.endpoints.get(name)
                if ep is not None and region in (None, r):
                    found.append(ep)
        return found

    def age_endpoint(self, name: str, minutes: float, region: str | None = None) -> bool:
        found = self.endpoints_named(name, region)
        for ep in found:
            # Up for that long, and unchanged since it was made.
            ep.creation_time = ep.creation_time - dt.timedelta(minutes=minutes)
            ep.last_modified_time = ep.creation_time
        return bool(found)

    def age_alarm(self, name: str, minutes: float, region: str | None = None) -> bool:
        """An alarm in its state (and as configured) for that much longer, as if made earlier."""
        alarm = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region or "us-east-1"].alarms.get(name)
        if alarm is not None:
            alarm.state_updated_timestamp -= dt.timedelta(minutes=minutes)
            alarm.configuration_updated_timestamp -= dt.timedelta(minutes=minutes)
        return alarm is not None

    def age_metrics(self, namespace: str, minutes: float, region: str | None = None) -> int:
        """A namespace's datapoints published that much earlier: the demo's hours of training pass
        without a canary's old KPI falling in the next canary's window."""
        backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region or "us-east-1"]
        aged = 0
        for datum in backend.metric_data:
            if datum.namespace == namespace:
                datum.timestamp -= dt.timedelta(minutes=minutes)
                aged += 1
        return aged

    def set_endpoint_status(self, name: str, status: str, region: str | None = None) -> bool:
        found = self.endpoints_named(name, region)
        for ep in found:
            ep.endpoint_status = status
        return bool(found)

    def set_training_status(
        self, name: str, status: str, metrics: dict[str, float] | None = None, failure_reason: str | None = None
    ) -> bool:
        """A job ends as SageMaker ends it: its status, its final metrics, why it failed."""
        for regions in sagemaker_backends.values():
            for backend in regions.values():
                job = backend.training_jobs.get(name)
                if job is not None:
                    job.training_job_status = status
                    job.secondary_status = status
                    job.training_end_time = job.last_modified_time = utcnow()
                    if metrics is not None:
                        job.final_metric_data_list = [
                            {"MetricName": k, "Value": float(v), "Timestamp": job.training_end_time}
                            for k, v in metrics.items()
                        ]
                    if failure_reason is not None:
                        job.failure_reason = failure_reason
                    return True
        return False

    def model_package(self, arn: str) -> Any:
        for regions in sagemaker_backends.values():
            for backend in regions.values():
                package = backend.model_packages.get(backend.model_package_name_mapping.get(arn, arn))
                if package is not None:
                    return package
        return None

    def update_model_package(self, environ: dict[str, Any], body: bytes, start_response: Callable) -> Any:
        """UpdateModelPackage changes what it names and keeps the rest, as SageMaker's does; moto
        replaces the metadata and the approval description with the request's (none, when a
        status alone changes), which would lose a version's lineage on approval."""
        request = json.loads(body or b"{}")
        package = self.model_package(request.get("ModelPackageArn", ""))
        kept = (dict(package.customer_metadata_properties or {}), package.approval_description) if package else None
        answer = b"".join(self.moto(environ, start_response))
        if package is not None and kept is not None:
            metadata, description = kept
            metadata.update(request.get("CustomerMetadataProperties") or {})
            for key in request.get("CustomerMetadataPropertiesToRemove") or []:
                metadata.pop(key, None)
            package.customer_metadata_properties = metadata
            if request.get("ApprovalDescription") is None:
                package.approval_description = description
        return [answer]

    def create_model_package(self, environ: dict[str, Any], region: str, body: bytes, start_response: Callable) -> Any:
        """CreateModelPackage is idempotent on its ClientToken, as SageMaker's is: the same token
        answers the package it made (moto makes another)."""
        request = json.loads(body or b"{}")
        token = request.get("ClientToken")
        key = (region, request.get("ModelPackageGroupName"), token)
        if token and key in self.package_tokens:
            return self.json_response(start_response, "200 OK", {"ModelPackageArn": self.package_tokens[key]})
        status_line: list[str] = []

        def capture(status: str, headers: list, *rest: Any) -> Any:
            status_line.append(status)
            return start_response(status, headers, *rest)

        answer = b"".join(self.moto(environ, capture))
        if token and status_line and status_line[0].startswith("200"):
            self.package_tokens[key] = json.loads(answer).get("ModelPackageArn")
        return [answer]

    def update_endpoint(self, region: str, body: bytes, start_response: Callable) -> Any:
        try:
            result = self.endpoints.update(DEFAULT_ACCOUNT_ID, region, json.loads(body or b"{}"))
            return self.json_response(start_response, "200 OK", result)
        except ValidationException as e:
            return self.json_response(
                start_response, "400 Bad Request", {"__type": "ValidationException", "message": str(e)}
            )

    @staticmethod
    def json_response(start_response: Callable, status: str, payload: dict[str, Any]) -> list[bytes]:
        data = json.dumps(payload).encode()
        start_response(
            status,
            [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))],
        )
        return [data]

    def throttled(self, service: str, cbor: bool, start_response: Callable) -> list[bytes]:
        if cbor:
            data = cbor2.dumps({"__type": "com.amazonaws.cloudwatch#Throttling", "message": "Rate exceeded"})
            start_response(
                "400 Bad Request",
                [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")],
            )
            return [data]
        if service == "s3":
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            start_response("503 Slow Down", [("Content-Type", "application/xml")])
            return [body]
        error = "ThrottlingException"
        return self.json_response(start_response, "400 Bad Request", {"__type": error, "message": "Rate exceeded"})

    # ---- control API for tests, the demo and benchmarks
    def control(self, environ: dict[str, Any], start_response: Callable, path: str) -> list[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        if path == "/_localaws/health":
            return self.json_response(start_response, "200 OK", {"ok": True})
        if path == "/_localaws/calls":
            key = query.get("access_key", [None])[0]
            with self.calls_lock:
                calls = [c for c in self.calls if key is None or c.access_key == key]
            rows = [
                {
                    "service": c.service,
                    "operation": c.operation,
                    "resource": c.resource,
                    "status": c.status,
                    "mutating": c.mutating,
                }
                for c in calls
            ]
            return self.json_response(start_response, "200 OK", {"calls": rows})
        if path == "/_localaws/settle":
            done = self.endpoints.settle(body.get("endpoint"), force=True)
            return self.json_response(start_response, "200 OK", {"settled": [d.summary() for d in done]})
        if path == "/_localaws/deployments":
            with self.endpoints.lock:
                rows = [d.summary() for d in self.endpoints.deployments]
            return self.json_response(start_response, "200 OK", {"deployments": rows})
        if path == "/_localaws/faults":
            faults = Faults()
            faults.latency_ms = float(body.get("latency_ms", 0))
            faults.throttle_share = float(body.get("throttle_share", 0))
            faults.operations = set(body.get("operations", []))
            faults.access_key = body.get("access_key")
            faults.error = body.get("error")
            if faults.access_key is None:
                self.faults = faults
            elif faults.latency_ms or faults.throttle_share or faults.error:
                self.faults_by_key[faults.access_key] = faults
            else:
                self.faults_by_key.pop(faults.access_key, None)
            return self.json_response(start_response, "200 OK", {"ok": True})
        if path == "/_localaws/training-jobs":
            found = self.set_training_status(body["name"], body["status"], body.get("metrics"), body.get("failure_reason"))
            return self.json_response(start_response, "200 OK" if found else "404 Not Found", {"ok": found})
        if path == "/_localaws/age-endpoint":
            # moto stamps endpoints with the time they were created; the sweeper judges only
            # endpoints older than its window.
            aged = self.age_endpoint(body["endpoint"], float(body["minutes"]), body.get("region"))
            return self.json_response(start_response, "200 OK" if aged else "404 Not Found", {"ok": aged})
        if path == "/_localaws/age-alarm":
            aged = self.age_alarm(body["alarm"], float(body["minutes"]), body.get("region"))
            return self.json_response(start_response, "200 OK" if aged else "404 Not Found", {"ok": aged})
        if path == "/_localaws/endpoint-status":
            # Endpoints in states moto never leaves them in (Failed, OutOfService, ...).
            found = self.set_endpoint_status(body["endpoint"], body["status"], body.get("region"))
            return self.json_response(start_response, "200 OK" if found else "404 Not Found", {"ok": found})
        if path == "/_localaws/queue":
            # A queue to route events or a topic to, as a team's rule or subscription would.
            from moto.sqs.models import sqs_backends

            queue = sqs_backends[DEFAULT_ACCOUNT_ID][body.get("region", "us-east-1")].create_queue(body["name"])
            return self.json_response(start_response, "200 OK", {"arn": queue.queue_arn})
        if path == "/_localaws/topic":
            # A topic a person is subscribed to, through a queue the test reads.
            from moto.sns.models import sns_backends
            from moto.sqs.models import sqs_backends

            region = body.get("region", "us-east-1")
            queue = sqs_backends[DEFAULT_ACCOUNT_ID][region].create_queue(body["queue"])
            sns = sns_backends[DEFAULT_ACCOUNT_ID][region]
            topic = sns.create_topic(body["name"])
            sns.subscribe(topic.arn, queue.queue_arn, "sqs")
            return self.json_response(start_response, "200 OK", {"arn": topic.arn})
        if path == "/_localaws/messages":
            from moto.sqs.models import sqs_backends

            region = query.get("region", ["us-east-1"])[0]
            queue = sqs_backends[DEFAULT_ACCOUNT_ID][region].queues.get(query["queue"][0])
            bodies = [m.body for m in queue._messages] if queue else []
            if queue:
                queue._messages.clear()
            return self.json_response(start_response, "200 OK", {"messages": bodies})
        if path == "/_localaws/invocations":
            # What an endpoint (one variant of it, or any) or a version answers InvokeEndpoint with.
            if body.get("package"):
                self.invocations[("package", body["package"].lower())] = body
            else:
                self.invocations[(body["endpoint"], body.get("variant"))] = body
            return self.json_response(start_response, "200 OK", {"ok": True})
        if path == "/_localaws/update-seconds":
            self.endpoints.update_seconds = float(body["seconds"])
            return self.json_response(start_response, "200 OK", {"ok": True})
        return self.json_response(start_response, "404 Not Found", {"error": f"no control {path}"})


class QuietHandler(MotoRequestHandler):
    """moto's handler without a log line per request (the call log keeps them)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def serve(host: str, port: int, update_seconds: float, call_log: str | None = None) -> Any:
    app = LocalAws(update_seconds, call_log)
    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    return app, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--update-seconds",
        type=float,
        default=2.0,
        help="how long an UpdateEndpoint stays Updating before it settles",
    )
    parser.add_argument("--call-log", help="append each call a function made to this file (JSON lines)")
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin closes")
    args = parser.parse_args()

    _, server = serve(args.host, args.port, args.update_seconds, args.call_log)
    host, port = server.server_address[:2]
    print(f"READY http://{host}:{port}", flush=True)
    if args.exit_with_stdin:

        def watch() -> None:
            sys.stdin.read()
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()

"""The IAM proof: every call each function made in the integration tests, judged by that
function's policy in template.yaml.

The local AWS appends each call a function made to a JSON-lines file (`--call-log`; the
function's name is in the user agent). This check resolves each function's policy statements
with the parameters of a stack that would own the test's resources (derived from the test's
id, as the harness names them), turns each call into what IAM would authorise -- the action, the
resource ARNs (SageMaker names lower-cased, as in its ARNs), the condition keys, and the calls
services make as the caller (Application Auto Scaling's alarms and service-linked role, KMS
through S3 and SageMaker, tags on create) -- and evaluates them: explicit Deny first, then
Allow.

It fails when a call would be refused, or when a policy allows an action no test exercised and
UNEXERCISED does not say why.

Run: python check.py --calls DIR [--template template.yaml]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cfnlint.decode import decode

ACCOUNT = "123456789012"
PARTITION = "aws"
# The role the tests' models and training jobs run as (tests/src/lib.rs, ROLE_ARN).
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/sagemaker-execution"
FUNCTIONS = {
    "model-deployer": "ModelDeployerFunction",
    "alarm-responder": "AlarmResponderFunction",
    "drift-scanner": "DriftScannerFunction",
    "endpoint-sweeper": "EndpointSweeperFunction",
}
SCALING_ROLE = (
    f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
# Allowed actions no integration test makes, and why they are granted anyway.
UNEXERCISED: dict[str, dict[str, str]] = {
    "model-deployer": {
        "iam:CreateServiceLinkedRole": "Application Auto Scaling makes the SageMaker scaling role on an account's first registration; the local AWS has it already",
    },
    "alarm-responder": {
        "iam:CreateServiceLinkedRole": "as for the deployer: only on an account's first registration",
    },
    "drift-scanner": {
        "dynamodb:DeleteItem": "clears the memory of a plan that failed for good once it succeeds (the pipeline's unit tests and the deployer's integration tests cover it)",
        "s3:ListBucket": "without it S3 answers 403, not 404, for a snapshot not written yet; the local AWS answers 404 either way",
    },
    "endpoint-sweeper": {
        "iam:CreateServiceLinkedRole": "as for the deployer: only on an account's first registration",
    },
}


def stack_parameters(test_id: str, region: str, function: str = "") -> dict[str, Any]:
    """The parameters of a stack that owns one test's resources, named as the harness names them
    (tests/src/lib.rs and scenario.rs: `<id>-ep`, `<id>-ledger`, ...). The sweeper's tests each
    have a region of their own, with the one target `recs-prod`."""
    return {
        "ManagedNamePrefix": "recs-" if function == "endpoint-sweeper" else f"{test_id}-",
        "AlarmNamePrefix": f"{test_id}-",
        "AdapterName": f"{test_id}-lora",
        "TrainingBucket": f"{test_id}-training",
        "ReportBucket": f"{test_id}-reports",
        "EvaluationReportsBucket": f"{test_id}-evaluations",
        "ProductsTableName": f"{test_id}-products",
        "EventBusName": f"{test_id}-decisions",
        "SageMakerExecutionRoleArn": ROLE_ARN,
        "TrainingRoleArn": ROLE_ARN,
        "KmsKeyArns": [f"arn:aws:kms:{region}:{ACCOUNT}:key/{test_id}-key"],
        "_LedgerTable": f"{test_id}-ledger",
    }


# --------------------------------------------------------------------------- the template


class Template:
    def __init__(self, path: Path) -> None:
        self.doc, matches = decode(str(path))
        if self.doc is None:
            raise SystemExit(f"{path}: {matches}")

    def validate(self, params: dict[str, Any]) -> list[str]:
        """Parameter values the template itself would refuse."""
        problems = []
        for name, spec in self.doc["Parameters"].items():
            if name not in params:
                continue
            value = params[name]
            for v in value if isinstance(value, list) else [value]:
                if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], v):
                    problems.append(f"{name}={v!r} does not match {spec['AllowedPattern']}")
                if len(v) < int(spec.get("MinLength", 0)):
                    problems.append(f"{name}={v!r} is shorter than {spec['MinLength']}")
        return problems

    def statements(self, function: str, params: dict[str, Any], region: str) -> list[dict[str, Any]]:
        resource = self.doc["Resources"][FUNCTIONS[function]]
        resolver = Resolver(self.doc, params, region)
        out = []
        for policy in resource["Properties"].get("Policies", []):
            for statement in resolver.resolve(policy)["Statement"]:
                if statement is not NO_VALUE:
                    out.append(statement)
        return out

    def environment(self, function: str) -> dict[str, Any]:
        return self.doc["Resources"][FUNCTIONS[function]]["Properties"]["Environment"]["Variables"]


NO_VALUE = object()


class Resolver:
    """The intrinsic functions the policies use, resolved for one stack."""

    def __init__(self, doc: dict[str, Any], params: dict[str, Any], region: str) -> None:
        self.doc, self.params, self.region = doc, params, region

    def ref(self, name: str) -> Any:
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": self.region, "AWS::AccountId": ACCOUNT, "AWS::NoValue": NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.doc["Parameters"]:
            return self.doc["Parameters"][name].get("Default", "")
        if name == "LedgerTable":
            return self.params["_LedgerTable"]
        raise KeyError(f"no value for Ref {name}")

    def get_att(self, resource: str, attribute: str) -> str:
        if (resource, attribute) == ("LedgerTable", "Arn"):
            return f"arn:{PARTITION}:dynamodb:{self.region}:{ACCOUNT}:table/{self.params['_LedgerTable']}"
        raise KeyError(f"no value for GetAtt {resource}.{attribute}")

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.doc["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(n) for n in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(*(arg.split(".", 1) if isinstance(arg, str) else arg))
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: self.sub(m.group(1)), arg)
            if key == "Fn::Join":
                return arg[0].join(self.resolve(arg[1]))
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                a, b = self.resolve(arg)
                return a == b
            if key == "Fn::Not":
                return not self.resolve(arg[0])
        return {k: self.resolve(v) for k, v in node.items()}

    def sub(self, name: str) -> str:
        if "." in name:
            return self.get_att(*name.split(".", 1))
        value = self.ref(name)
        return ",".join(value) if isinstance(value, list) else str(value)


# --------------------------------------------------------------------------- what a call needs


@dataclass
class Need:
    """One authorisation IAM makes for a call: an action on a resource, with condition keys."""

    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)
    why: str = ""


def sagemaker_arn(region: str, kind: str, name: str) -> str:
    return f"arn:{PARTITION}:sagemaker:{region}:{ACCOUNT}:{kind}/{name.lower()}"


def kms_arn(region: str, key: str) -> str:
    return key if key.startswith("arn:") else f"arn:{PARTITION}:kms:{region}:{ACCOUNT}:key/{key}"


def tag_context(facts: dict[str, Any], kind: str) -> dict[str, Any]:
    tags = facts.get("ResourceTags", {}).get(kind, {})
    context: dict[str, Any] = {f"aws:ResourceTag/{k}": v for k, v in tags.items()}
    if "TagKeys" in facts:
        context["aws:TagKeys"] = facts["TagKeys"]
    return context


SAGEMAKER_RESOURCES = {
    # operation: the resource kinds it is authorised on, by the request member naming each.
    "DescribeEndpoint": [("endpoint", "EndpointName")],
    "DeleteEndpoint": [("endpoint", "EndpointName")],
    "UpdateEndpointWeightsAndCapacities": [("endpoint", "EndpointName")],
    "CreateEndpoint": [("endpoint", "EndpointName"), ("endpoint-config", "EndpointConfigName")],
    "UpdateEndpoint": [("endpoint", "EndpointName"), ("endpoint-config", "EndpointConfigName")],
    "InvokeEndpoint": [("endpoint", "EndpointName")],
    "DescribeEndpointConfig": [("endpoint-config", "EndpointConfigName")],
    "CreateEndpointConfig": [("endpoint-config", "EndpointConfigName")],
    "DeleteEndpointConfig": [("endpoint-config", "EndpointConfigName")],
    "DescribeModel": [("model", "ModelName")],
    "CreateModel": [("model", "ModelName")],
    "DeleteModel": [("model", "ModelName")],
    "CreateTrainingJob": [("training-job", "TrainingJobName")],
    "DescribeTrainingJob": [("training-job", "TrainingJobName")],
    # A new version of a group is authorised on the group.
    "CreateModelPackage": [("model-package-group", "ModelPackageGroupName")],
}


def sagemaker_needs(op: str, region: str, facts: dict[str, Any]) -> list[Need]:
    action = f"sagemaker:{op}"
    if op in SAGEMAKER_RESOURCES:
        needs = [
            Need(action, sagemaker_arn(region, kind, facts[member]), tag_context(facts, kind))
            for kind, member in SAGEMAKER_RESOURCES[op]
            if member in facts
        ]
    elif op in ("AddTags", "DeleteTags", "ListTags"):
        arn = facts["ResourceArn"]
        kind = arn.split(":", 5)[-1].split("/", 1)[0]
        needs = [Need(action, arn.lower(), tag_context(facts, kind))]
    elif op in ("DescribeModelPackage", "UpdateModelPackage"):
        name = facts.get("ModelPackageName") or facts.get("ModelPackageArn")
        arn = name if name.startswith("arn:") else sagemaker_arn(region, "model-package", name)
        needs = [Need(action, arn.lower())]
    else:  # List* and other account-wide reads
        needs = [Need(action, "*")]
    # Tags on create are authorised as AddTags on the new resource.
    if op.startswith("Create") and facts.get("TagKeys"):
        needs += [Need("sagemaker:AddTags", n.resource, {"aws:TagKeys": facts["TagKeys"]}, f"tags on {op}") for n in needs[:1]]
    for member in ("ExecutionRoleArn", "RoleArn"):
        if op.startswith("Create") and member in facts:
            needs.append(Need("iam:PassRole", facts[member], {"iam:PassedToService": "sagemaker.amazonaws.com"}, f"{op} passes {member}"))
    # An endpoint on an encrypted config: SageMaker uses the key as the caller.
    if op in ("CreateEndpoint", "UpdateEndpoint") and facts.get("ConfigKmsKeyId"):
        key = kms_arn(region, facts["ConfigKmsKeyId"])
        via = {"kms:ViaService": f"sagemaker.{region}.amazonaws.com"}
        needs += [Need(a, key, via, f"{op} on a config encrypted with it") for a in ("kms:CreateGrant", "kms:DescribeKey")]
    return needs


S3_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
}


def s3_needs(op: str, region: str, facts: dict[str, Any]) -> list[Need]:
    action = S3_ACTIONS.get(op, f"s3:{op}")
    on_bucket = action == "s3:ListBucket"
    arn = f"arn:{PARTITION}:s3:::{facts['Bucket']}" + ("" if on_bucket else f"/{facts['Key']}")
    needs = [Need(action, arn)]
    if facts.get("SSEKMSKeyId"):
        key = kms_arn(region, facts["SSEKMSKeyId"])
        via = {"kms:ViaService": f"s3.{region}.amazonaws.com"}
        # A multipart upload also decrypts the data key for each part (S3's documentation).
        kms = {"s3:GetObject": ["kms:Decrypt"], "s3:PutObject": ["kms:GenerateDataKey"]}.get(action, [])
        if op in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            kms = ["kms:GenerateDataKey", "kms:Decrypt"]
        needs += [Need(a, key, via, f"{op} of an object encrypted with it") for a in kms]
    return needs


def cloudwatch_needs(op: str, region: str, facts: dict[str, Any]) -> list[Need]:
    alarm = lambda name: f"arn:{PARTITION}:cloudwatch:{region}:{ACCOUNT}:alarm:{name}"
    action = f"cloudwatch:{op}"
    names = facts.get("AlarmNames") or ([facts["AlarmName"]] if "AlarmName" in facts else [])
    if op in ("ListTagsForResource", "TagResource"):
        return [Need(action, facts["ResourceARN"] if "ResourceARN" in facts else facts.get("ResourceArn", "*"))]
    if names:
        needs = [Need(action, alarm(n)) for n in names]
        if op == "PutMetricAlarm" and facts.get("TagKeys"):
            needs += [Need("cloudwatch:TagResource", alarm(n), {}, "tags on PutMetricAlarm") for n in names]
        return needs
    return [Need(action, alarm("*") if op == "DescribeAlarms" else "*")]


def autoscaling_needs(op: str, region: str, facts: dict[str, Any]) -> list[Need]:
    action = f"application-autoscaling:{op}"
    if op.startswith("Describe"):
        return [Need(action, "*")]
    # A scalable target's ARN carries an id the caller never sees: any id under the account.
    target = f"arn:{PARTITION}:application-autoscaling:{region}:{ACCOUNT}:scalable-target/0123456789abcdef"
    needs = [Need(action, target)]
    resource_id = facts.get("ResourceId", "")
    sagemaker = facts.get("ServiceNamespace") == "sagemaker" and resource_id.startswith("endpoint/")
    if sagemaker and op in ("RegisterScalableTarget", "PutScalingPolicy"):
        # Application Auto Scaling checks that the caller may itself scale what it registers.
        endpoint = sagemaker_arn(region, "endpoint", resource_id.split("/")[1])
        why = "Application Auto Scaling validates the caller's SageMaker permissions"
        needs += [Need(a, endpoint, {}, why) for a in ("sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities")]
        needs.append(Need("sagemaker:DescribeEndpointConfig", f"arn:{PARTITION}:sagemaker:{region}:{ACCOUNT}:endpoint-config/*", {}, why))
    if sagemaker and op == "DeregisterScalableTarget":
        name = f"arn:{PARTITION}:cloudwatch:{region}:{ACCOUNT}:alarm:TargetTracking-{resource_id}-AlarmHigh-0123"
        needs.append(Need("cloudwatch:DeleteAlarms", name, {}, "deregistering deletes target-tracking alarms as the caller"))
    if op == "RegisterScalableTarget" and facts.get("ServiceNamespace") == "sagemaker":
        needs.append(Need("iam:CreateServiceLinkedRole", SCALING_ROLE,
                          {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"},
                          "Application Auto Scaling's role for SageMaker, where it does not exist yet"))
    if op == "PutScalingPolicy" and facts.get("PolicyType") == "TargetTrackingScaling":
        for suffix in ("AlarmHigh", "AlarmLow"):
            name = f"arn:{PARTITION}:cloudwatch:{region}:{ACCOUNT}:alarm:TargetTracking-{resource_id}-{suffix}-0123"
            needs += [Need(a, name, {}, "a target-tracking policy's alarms, made as the caller")
                      for a in ("cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms")]
    return needs


def needs_of(call: dict[str, Any]) -> list[Need]:
    service, op, region, facts = call["service"], call["operation"], call["region"], call["facts"]
    if service == "sagemaker":
        return sagemaker_needs(op, region, facts)
    if service == "s3":
        return s3_needs(op, region, facts)
    if service == "monitoring":
        return cloudwatch_needs(op, region, facts)
    if service == "application-autoscaling":
        return autoscaling_needs(op, region, facts)
    if service == "dynamodb":
        return [Need(f"dynamodb:{op}", f"arn:{PARTITION}:dynamodb:{region}:{ACCOUNT}:table/{facts['TableName']}")]
    if service == "events" and op == "PutEvents":
        return [Need("events:PutEvents", bus if bus.startswith("arn:") else f"arn:{PARTITION}:events:{region}:{ACCOUNT}:event-bus/{bus}")
                for bus in facts.get("EventBusNames", ["default"])]
    if service == "tagging":
        return [Need(f"tag:{op}", "*")]
    raise ValueError(f"the check does not know {service} {op}: teach needs_of")


# --------------------------------------------------------------------------- evaluation


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def matches_action(patterns: Any, action: str) -> bool:
    return any(fnmatch.fnmatch(action.lower(), p.lower()) for p in as_list(patterns))


def matches_resource(patterns: Any, resource: str) -> bool:
    return any(p == "*" or fnmatch.fnmatchcase(resource, p) for p in as_list(patterns))


def compare(operator: str, actual: str, expected: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual == expected
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() == expected.lower()
    if operator in ("StringLike", "ArnLike"):
        return fnmatch.fnmatchcase(actual, expected)
    if operator == "Bool":
        return str(actual).lower() == str(expected).lower()
    raise ValueError(f"the check does not know the condition operator {operator}")


def condition_holds(conditions: dict[str, Any], context: dict[str, Any]) -> bool:
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, tests in conditions.items():
        qualifier, _, op = operator.rpartition(":")
        if_exists = op.endswith("IfExists")
        op = op.removesuffix("IfExists")
        for key, expected in tests.items():
            if key.lower() not in lowered:
                # IfExists, and ForAllValues over an empty set, hold when the key is missing.
                if if_exists or qualifier == "ForAllValues":
                    continue
                return False
            actual = as_list(lowered[key.lower()])
            hit = lambda a: any(compare(op, str(a), str(e)) for e in as_list(expected))
            if qualifier == "ForAllValues":
                ok = all(hit(a) for a in actual)
            else:
                ok = any(hit(a) for a in actual)
            if not ok:
                return False
    return True


def applies(statement: dict[str, Any], need: Need) -> bool:
    unknown = {"NotAction", "NotResource", "NotPrincipal"} & set(statement)
    if unknown:
        raise ValueError(f"the check does not evaluate {sorted(unknown)} (statement {statement.get('Sid')})")
    return (
        matches_action(statement.get("Action", []), need.action)
        and matches_resource(statement.get("Resource", []), need.resource)
        and condition_holds(statement.get("Condition", {}), need.context)
    )


def judge(statements: list[dict[str, Any]], need: Need) -> tuple[bool, str]:
    for s in statements:
        if s["Effect"] == "Deny" and applies(s, need):
            return False, f"denied by {s.get('Sid', '?')}"
    for s in statements:
        if s["Effect"] == "Allow" and applies(s, need):
            return True, s.get("Sid", "?")
    return False, "no statement allows it"


def allowed_actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a.lower() for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}


# --------------------------------------------------------------------------- the check


def read_calls(directory: Path) -> list[dict[str, Any]]:
    calls = []
    for path in sorted(directory.glob("*.jsonl")):
        calls += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return calls


def check(template: Template, calls: Iterable[dict[str, Any]]) -> tuple[list[str], dict[str, int]]:
    problems: list[str] = []
    exercised: dict[str, set[str]] = {f: set() for f in FUNCTIONS}
    granted: dict[str, set[str]] = {f: set() for f in FUNCTIONS}
    seen: set[str] = set()
    counts = {f: 0 for f in FUNCTIONS}
    for call in calls:
        function = call["function"]
        if function not in FUNCTIONS:
            problems.append(f"a call from an unknown function {function!r}: {call}")
            continue
        test_id = call["access_key"].removeprefix("test-")
        params = stack_parameters(test_id, call["region"], function)
        statements = template.statements(function, params, call["region"])
        granted[function] |= allowed_actions(statements)
        counts[function] += 1
        for need in needs_of(call):
            exercised[function].add(need.action.lower())
            ok, why = judge(statements, need)
            line = f"{function} (test {test_id}): {need.action} on {need.resource} ({call['operation']}{', ' + need.why if need.why else ''}): {why}"
            if not ok and line not in seen:
                seen.add(line)
                problems.append(line)
    for function in FUNCTIONS:
        reasons = {a.lower() for a in UNEXERCISED.get(function, {})}
        for action in sorted(granted[function] - exercised[function] - reasons):
            problems.append(f"{function}: its policy allows {action}, which no integration test exercised; test it, drop it, or say why in UNEXERCISED")
    return problems, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=Path, required=True)
    parser.add_argument("--template", type=Path, default=Path(__file__).parents[2] / "template.yaml")
    args = parser.parse_args()
    template = Template(args.template)
    calls = read_calls(args.calls)
    if not calls:
        print(f"no calls in {args.calls}: run the integration tests with LOCALAWS_CALL_LOG_DIR set", file=sys.stderr)
        return 1
    params = stack_parameters("example", "us-east-1")
    problems = template.validate(params)
    found, counts = check(template, calls)
    problems += found
    for p in problems:
        print(f"IAM: {p}", file=sys.stderr)
    summary = ", ".join(f"{f} {n}" for f, n in counts.items())
    print(f"IAM check: {sum(counts.values())} calls judged ({summary}); {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

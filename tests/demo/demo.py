"""`make demo`: the suite on a local AWS, the real Lambda binaries driven through the Runtime API
with the events in events/, and a timeline of what happened and why.

The fleet is the seeds' MangaAssist recommendation model: a model package group with several
versions, its endpoint, and the CloudWatch alarms that guard it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import stat
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "localaws"), str(ROOT / "tests" / "demo")]

import boto3  # noqa: E402

import localaws  # noqa: E402
from runtime_api import Function  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "123456789012"
GROUP = "mangaassist-recommendation-mpg"
ENDPOINT = "mangaassist-recommendation-endpoint"
ALARM_5XX = "mangaassist-recommendation-5xx"
ALARM_LATENCY = "mangaassist-recommendation-latency"
ALARM_CTR = "mangaassist-recommendation-ctr-low"
KPI_NAMESPACE = "MangaAssist/Recommendations"
LEDGER = "lifecycle-ledger"
PRODUCTS = "mangaassist-products"
TRAINING_BUCKET = "mangaassist-training"
REPORT_BUCKET = "mangaassist-sweeps"
ADAPTER = "mangaassist-recs-lora"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/mangaassist-sagemaker-execution"
GOOD = {"validation_loss": "0.31", "offline_ctr": "0.084", "catalog_snapshot_date": "2025-09-01"}

TARGETS = [
    {
        "model_package_group": GROUP,
        "endpoint": ENDPOINT,
        "instance_type": "ml.m5.xlarge",
        "instance_count": 2,
        "strategy": {"type": "linear", "step_percent": 25, "wait_seconds": 60},
        "bake_seconds": 600,
        "rollback_alarms": [ALARM_5XX, ALARM_LATENCY],
        "gates": [{"metric": "validation_loss", "max": 0.35}, {"metric": "offline_ctr", "min": 0.075}],
        "kpi_alarms": [
            {
                "alarm": ALARM_CTR,
                "min_samples": 10000,
                "window_minutes": 60,
                "samples": {"namespace": KPI_NAMESPACE, "metric": "Impressions", "dimensions": {"EndpointName": ENDPOINT}},
            }
        ],
        "scale_up_floor": 3,
    }
]


# The seed's own fix for its worst regression: 10% of the traffic for 30 minutes, judged on CTR.
KPI_GATE = {
    "metric": {"namespace": KPI_NAMESPACE, "name": "ClickThroughRate", "stat": "Average"},
    "samples": {"namespace": KPI_NAMESPACE, "name": "Impressions", "stat": "Sum"},
    "canary_percent": 10,
    "bake_minutes": 30,
    "min_samples": 1000,
    "min_value": 0.075,
}

# Seed 002's business hours, as code: 3-10 instances on weekdays in Tokyo, 3-4 in the evening.
CAPACITY = {
    "min": 3, "max": 10, "target_invocations": 70, "scale_in_cooldown": 600,
    "schedules": [
        {"name": "business-hours", "cron": "cron(0 8 ? * MON-FRI *)", "timezone": "Asia/Tokyo", "min": 3, "max": 10},
        {"name": "evenings", "cron": "cron(0 20 ? * * *)", "timezone": "Asia/Tokyo", "min": 3, "max": 4},
    ],
}

DRIFT_OLD, DRIFT_NEW = 1000, 420
DRIFT_ENV = {
    "ADAPTER_NAME": ADAPTER,
    "ENDPOINT_NAME": ENDPOINT,
    "PRODUCTS_TABLE": PRODUCTS,
    "TRAINING_BUCKET": TRAINING_BUCKET,
    "TRAINING_IMAGE": "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:2.1.0-transformers4.36-gpu-py310",
    "TRAINING_ROLE_ARN": ROLE,
    "TRAINING_HYPERPARAMETERS": json.dumps({"lora_r": "16", "lora_alpha": "32", "epochs": "3"}),
    "DRY_RUN": "false",
}


def bold(s: str) -> str:
    return f"\033[1m{s}\033[0m" if sys.stdout.isatty() else s


class Demo:
    def __init__(self, dist: Path, workdir: Path, bin_dir: Path | None = None) -> None:
        self.app, self.server = localaws.serve("127.0.0.1", 0, update_seconds=1.0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        session = boto3.Session(aws_access_key_id="demo-setup", aws_secret_access_key="x", region_name=REGION)
        self.sm = session.client("sagemaker", endpoint_url=self.url)
        self.cw = session.client("cloudwatch", endpoint_url=self.url)
        self.ddb = session.client("dynamodb", endpoint_url=self.url)
        self.aas = session.client("application-autoscaling", endpoint_url=self.url)
        self.s3 = session.client("s3", endpoint_url=self.url)
        self.dist = dist
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.functions: dict[str, Function] = {}

    # ---- setup
    def seed(self) -> None:
        self.ddb.create_table(
            TableName=LEDGER,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        self.sm.create_model_package_group(
            ModelPackageGroupName=GROUP, ModelPackageGroupDescription="MangaAssist recommendation adapter"
        )
        for name, metric, threshold in [
            (ALARM_5XX, "Invocation5XXErrors", 1.0),
            (ALARM_LATENCY, "ModelLatency", 5_000_000.0),
        ]:
            self.cw.put_metric_alarm(
                AlarmName=name,
                Namespace="AWS/SageMaker",
                MetricName=metric,
                Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "AllTraffic"}],
                Statistic="Average" if metric == "ModelLatency" else "Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=threshold,
                ComparisonOperator="GreaterThanThreshold",
            )
        # The business KPI alarm (click-through rate per endpoint), as the application publishes it.
        self.cw.put_metric_alarm(
            AlarmName=ALARM_CTR,
            Namespace=KPI_NAMESPACE,
            MetricName="ClickThroughRate",
            Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}],
            Statistic="Average",
            Period=300,
            EvaluationPeriods=1,
            Threshold=7.5,
            ComparisonOperator="LessThanThreshold",
        )
        self.register("Approved", {**GOOD, "validation_loss": "0.33"})  # v1
        self.register("Approved", GOOD)  # v2

    def seed_catalog(self, old: int, new: int) -> None:
        """The products table: backlist titles from before the adapter's September snapshot, and
        new releases since (the seeds: more than 400 by March, none known to the adapter)."""
        self.ddb.create_table(
            TableName=PRODUCTS,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.s3.create_bucket(Bucket=TRAINING_BUCKET)
        items = []
        for i in range(old):
            items.append({"id": {"S": f"B{i:07d}"}, "title": {"S": f"Backlist volume {i}"},
                          "created_at": {"S": f"2025-0{1 + i % 8}-{1 + i % 28:02d}"}, "price": {"N": "9.99"}})
        for i in range(new):
            items.append({"id": {"S": f"N{i:07d}"}, "title": {"S": f"New release {i}"},
                          "created_at": {"S": f"2026-0{1 + i % 3}-{1 + i % 28:02d}T09:00:00Z"}, "price": {"N": "11.99"}})
        for k in range(0, len(items), 25):
            self.ddb.batch_write_item(RequestItems={PRODUCTS: [{"PutRequest": {"Item": it}} for it in items[k:k + 25]]})

    def fleet_endpoint(self, name: str, instances: int, tags: dict[str, str], invocations: float,
                       hours_up: float = 10) -> None:
        """An endpoint that has been up (unchanged) for `hours_up`, with its last hour of traffic."""
        self.sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE,
                             PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-gpu"})
        self.sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": f"{name}-model", "InstanceType": "ml.g4dn.xlarge",
            "InitialInstanceCount": instances}])
        self.sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config",
                                Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        self.app.age_endpoint(name, hours_up * 60)
        if invocations:
            self.cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
                "MetricName": "Invocations", "Value": invocations, "Timestamp": time.time() - 300,
                "Dimensions": [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]}])

    def seed_fleet(self) -> None:
        """The seeds' fleet: what an hourly sweep finds in an account after a year of experiments."""
        self.s3.create_bucket(Bucket=REPORT_BUCKET)
        self.fleet_endpoint("recs-sandbox", 1, {"environment": "staging", "ProtectedFromAutoStop": "true"}, 0)
        self.fleet_endpoint("search-rerank-prod", 4, {"environment": "production"}, 0)
        self.fleet_endpoint("checkout-ranker", 1, {"environment": "production"}, 5_400)
        self.fleet_endpoint("chat-intent", 2, {"environment": "production"}, 900)
        self.aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId="endpoint/chat-intent/variant/AllTraffic",
                                          ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=0, MaxCapacity=4)
        # Case 1: marked idle 30 h ago. One stayed idle; someone used the other 10 h ago, outside the
        # last hour's window: idle over the window, not idle all along.
        self.fleet_endpoint("recs-experiment-staging", 1, {"environment": "staging"}, 0, hours_up=48)
        self.fleet_endpoint("recs-ab-test-staging", 1, {"environment": "staging"}, 0, hours_up=48)
        for name in ("recs-experiment-staging", "recs-ab-test-staging"):
            self.mark_idle(name, hours_ago=30)
        self.invocations("recs-ab-test-staging", 35, seconds_ago=10 * 3600)
        # Case 3: an untagged notebook endpoint: the stack's ENVIRONMENT decides.
        self.fleet_endpoint("notebook-endpoint-untagged", 1, {}, 0)
        # Case 4 (seed 000, scenario 5): the forgotten v1, untagged, serving 40% of users from a model
        # built from version 1 of the target's group.
        v1 = self.sm.list_model_packages(ModelPackageGroupName=GROUP, SortBy="CreationTime",
                                         SortOrder="Ascending")["ModelPackageSummaryList"][0]["ModelPackageArn"]
        self.sm.create_model(ModelName="mangaassist-recommendation-v1-model", ExecutionRoleArn=ROLE,
                             PrimaryContainer={"ModelPackageName": v1})
        self.sm.create_endpoint_config(EndpointConfigName="mangaassist-recommendation-v1-config", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "mangaassist-recommendation-v1-model",
            "InstanceType": "ml.g4dn.xlarge", "InitialInstanceCount": 1}])
        self.sm.create_endpoint(EndpointName="mangaassist-recommendation-v1",
                                EndpointConfigName="mangaassist-recommendation-v1-config")
        self.app.age_endpoint("mangaassist-recommendation-v1", 600)
        self.invocations("mangaassist-recommendation-v1", 3_800, seconds_ago=300)

    def mark_idle(self, name: str, hours_ago: float) -> None:
        arn = self.sm.describe_endpoint(EndpointName=name)["EndpointArn"]
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - hours_ago * 3600))
        self.sm.add_tags(ResourceArn=arn, Tags=[{"Key": "lifecycle:idle-since", "Value": at}])

    def invocations(self, name: str, count: float, seconds_ago: float) -> None:
        self.cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
            "MetricName": "Invocations", "Value": count, "Timestamp": time.time() - seconds_ago,
            "Dimensions": [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]}])

    def sweep_report(self, uri: str, only: list[str] | None = None) -> None:
        key = uri.split("/", 3)[3]
        report = json.loads(self.s3.get_object(Bucket=REPORT_BUCKET, Key=key)["Body"].read())
        for e in report["endpoints"]:
            if e.get("not_judged") or (only and e["endpoint"] not in only):
                continue
            finds = ", ".join(finding(f) for f in e["findings"]) or "healthy"
            cost = f"${e['monthly_usd']:,.0f}/mo" if e.get("monthly_usd") is not None else "?"
            print(f"    {e['endpoint']:<32} {finds:<42} {cost:>10}")
            for a in e["actions"]:
                print(f"      ✓ {a['action']}: {a['reason']} [{a['result']}]")
            for w in e["withheld"]:
                print(f"      – withheld {w['action']}: {w['why']}")

    def register(self, status: str, metadata: dict[str, str], statistics: str | None = None) -> str:
        extra = {}
        if statistics:
            extra["ModelMetrics"] = {
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": statistics}}
            }
        return self.sm.create_model_package(
            ModelPackageGroupName=GROUP,
            ModelApprovalStatus=status,
            CustomerMetadataProperties=metadata,
            **extra,
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-gpu",
                        "ModelDataUrl": f"s3://mangaassist-models/{GROUP}/model.tar.gz",
                    }
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )["ModelPackageArn"]

    def binary(self, name: str) -> str:
        if self.bin_dir is not None:
            # A plain build of the function (the demo's quick path): run it as it is.
            return str(self.bin_dir / name)
        target = self.workdir / name / "bootstrap"
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(self.dist / name / "bootstrap.zip") as z:
            target.write_bytes(z.read("bootstrap"))
        target.chmod(target.stat().st_mode | stat.S_IEXEC)
        return str(target)

    def start(self, name: str, env: dict[str, str], binary: str | None = None) -> None:
        base = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": f"demo-{name}",
            "AWS_SECRET_ACCESS_KEY": "x",
            "LEDGER_TABLE": LEDGER,
            "ENVIRONMENT": "production",
        }
        env = {k: v for k, v in {**base, **env}.items() if v != ""}
        fn = Function(name, self.binary(binary or name), env, log_path=str(self.workdir / f"{name}.log"))
        init = fn.wait_ready()
        self.functions[name] = fn
        print(f"  {name}: cold start {init * 1000:.1f} ms (logs: {self.workdir / (name + '.log')})")

    # ---- driving
    def send(self, function: str, event: Any, what: str) -> Any:
        print(f"\n{bold('▶ ' + what)}")
        response, error = self.functions[function].invoke(event)
        if error:
            print(f"  ✗ {error.get('errorType')}: {error.get('errorMessage')}")
            return None
        # Most functions answer a list of decisions; the drift scanner and sweeper, one report.
        for d in response.get("decisions", [response] if "outcome" in response else []):
            print(f"  → {d['outcome']}: {d['reason']}")
            if d.get("actions"):
                print(f"    actions: {', '.join(d['actions'])}")
        return response

    def package_event(self, file: str, arn: str) -> dict:
        e = load_event(file)
        e["detail"]["ModelPackageArn"] = arn
        e["detail"]["ModelPackageVersion"] = int(arn.rsplit("/", 1)[1])
        e["resources"] = [arn]
        return e

    def alarm_event(self, file: str) -> dict:
        """An alarm event from events/, firing now (after the endpoint's last change)."""
        e = load_event(file)
        time.sleep(0.01)  # strictly after the endpoint's last change, even on a fast machine
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        e["detail"]["state"]["timestamp"] = f"{stamp}.{int(now * 1000) % 1000:03d}+0000"
        return e

    def impressions(self, count: float) -> None:
        self.cw.put_metric_data(
            Namespace=KPI_NAMESPACE,
            MetricData=[{"MetricName": "Impressions", "Dimensions": [{"Name": "EndpointName", "Value": ENDPOINT}],
                         "Value": count, "Timestamp": time.time()}],
        )

    def control(self, path: str, body: dict) -> None:
        """A call to the local AWS's control API (what a real endpoint's model would answer)."""
        request = urllib.request.Request(f"{self.url}/_localaws/{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request).read()

    def wait_for_update(self) -> None:
        print("  … SageMaker shifts traffic (the local AWS takes 1 s for what takes minutes)")
        time.sleep(1.2)

    # ---- reporting
    def serving(self) -> str:
        ep = self.sm.describe_endpoint(EndpointName=ENDPOINT)
        cfg = self.sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
        tags = {t["Key"]: t["Value"] for t in self.sm.list_tags(ResourceArn=cfg["EndpointConfigArn"])["Tags"]}
        version = tags.get("lifecycle:model-package-version", "?")
        return f"{ep['EndpointStatus']} on {ep['EndpointConfigName']} (model package version {version})"

    def report(self) -> None:
        print(f"\n{bold('Ledger: every decision about ' + ENDPOINT)}")
        items = self.ddb.query(
            TableName=LEDGER,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :d)",
            ExpressionAttributeValues={":pk": {"S": f"endpoint#{ENDPOINT}"}, ":d": {"S": "decision#"}},
        )["Items"]
        for it in items:
            at = it["at"]["S"][11:19]
            print(f"  {at}  {it['function']['S']:<16} {it['outcome']['S']:<20} {it['reason']['S']}")
        print(f"\n{bold('Registry')}")
        for p in sorted(
            self.sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"],
            key=lambda p: p["ModelPackageVersion"],
        ):
            d = self.sm.describe_model_package(ModelPackageName=p["ModelPackageArn"])
            why = d.get("ApprovalDescription", "")
            print(f"  v{p['ModelPackageVersion']}: {d['ModelApprovalStatus']:<22} {why[:110]}")
        print(f"\n{bold('Endpoint')}\n  {ENDPOINT}: {self.serving()}")
        ep = self.sm.describe_endpoint(EndpointName=ENDPOINT)
        for v in ep["ProductionVariants"]:
            print(f"  variant {v['VariantName']}: {v.get('CurrentInstanceCount')} instances")
        print(f"\n{bold('Drift scanner: ' + ADAPTER)}")
        items = self.ddb.query(
            TableName=LEDGER,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :d)",
            ExpressionAttributeValues={":pk": {"S": f"adapter#{ADAPTER}"}, ":d": {"S": "decision#"}},
        )["Items"]
        for it in items:
            print(f"  {it['at']['S'][11:19]}  {it['outcome']['S']:<20} {it['reason']['S']}")
        for job in self.sm.list_training_jobs(NameContains=ADAPTER)["TrainingJobSummaries"]:
            print(f"  training job {job['TrainingJobName']}: {job['TrainingJobStatus']}")
        for obj in self.s3.list_objects_v2(Bucket=TRAINING_BUCKET).get("Contents", []):
            print(f"  s3://{TRAINING_BUCKET}/{obj['Key']} ({obj['Size']:,} bytes)")
        calls = localaws_calls(self.app)
        print(f"\n{bold('Mutating AWS calls made by the functions')}")
        for (op, res), n in calls.items():
            print(f"  {n:>2} × {op} {res or ''}")

    def stop(self) -> None:
        for fn in self.functions.values():
            fn.stop()
        self.server.shutdown()


def finding(f: dict) -> str:
    """A finding in words; a stale duplicate with the versions and traffic that matter."""
    if f["finding"].startswith("stale"):
        return (f"{f['finding']} of {f['canonical']} (serves v{f.get('version')}, target v{f.get('canonical_version')}, "
                f"{f['per_hour']:,.0f}/h)")
    return f["finding"]


def localaws_calls(app: localaws.LocalAws) -> dict:
    counts: dict = {}
    for c in app.calls:
        if c.access_key.startswith("demo-") and c.access_key != "demo-setup" and c.mutating and c.service in ("sagemaker", "application-autoscaling"):
            counts[(c.operation, c.resource)] = counts.get((c.operation, c.resource), 0) + 1
    return counts


def load_event(name: str) -> dict:
    return copy.deepcopy(json.loads((ROOT / "events" / name).read_text()))


def wrong_conclusions(demo: Demo) -> None:
    """Three facts that could be misread at 3 a.m., and what the deployer concludes instead."""
    print(f"\n{bold('Facts that are stale, failed or unreadable')}")
    # An alarm that was already firing: the deployment waits instead of being rolled back and blamed.
    demo.cw.set_alarm_state(AlarmName=ALARM_5XX, StateValue="ALARM", StateReason="Threshold Crossed: an upstream outage")
    v7 = demo.register("Approved", GOOD)
    demo.send("model-deployer", demo.package_event("model-package-approved.json", v7),
              "v7 approved while the 5XX alarm is already in ALARM (an upstream outage)")
    demo.cw.set_alarm_state(AlarmName=ALARM_5XX, StateValue="OK", StateReason="the upstream recovered")
    demo.send("model-deployer", load_event("deployer-tick.json"), "The alarm is OK again; the next reconcile")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE")

    # An unreadable evaluation report: blocked, not rejected.
    demo.s3.create_bucket(Bucket="mangaassist-evaluations")
    uri = "s3://mangaassist-evaluations/v8/statistics.json"
    v8 = demo.register("Approved", {"catalog_snapshot_date": "2025-09-01"}, statistics=uri)
    demo.send("model-deployer", demo.package_event("model-package-approved.json", v8),
              "v8 approved; its evaluation report is not in S3 yet")
    stats = {"recommendation_metrics": {"validation_loss": {"value": 0.30}, "offline_ctr": {"value": 0.086}}}
    demo.s3.put_object(Bucket="mangaassist-evaluations", Key="v8/statistics.json", Body=json.dumps(stats).encode())
    demo.send("model-deployer", load_event("deployer-tick.json"), "The report lands; the next reconcile")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE")

    # A failed call, then autoscaling: not a guardrail rollback.
    v9 = demo.register("Approved", GOOD)
    demo.app.faults.operations = {"UpdateEndpoint"}
    demo.app.faults.access_key = "demo-model-deployer"
    demo.app.faults.throttle_share = 1.0
    demo.send("model-deployer", demo.package_event("model-package-approved.json", v9),
              "v9 approved; UpdateEndpoint is throttled past every retry")
    demo.app.faults.throttle_share = 0.0
    demo.sm.update_endpoint_weights_and_capacities(
        EndpointName=ENDPOINT, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}]
    )
    print("  … autoscaling adds an instance: the endpoint changed, on its old config")
    demo.send("model-deployer", load_event("deployer-tick.json"), "The next reconcile")
    status = demo.sm.describe_model_package(ModelPackageName=v9)["ModelApprovalStatus"]
    print(f"  v9 is still {status}")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE")


def kpi_canary(demo: Demo) -> None:
    """The seeds' incident again (a version that passes every offline gate and cuts CTR from 8.4%
    to 7.1%), with the target's live KPI canary: 10% of users for 30 minutes, not all for 6 hours."""
    print(f"\n{bold('The same regression again, now with a live KPI canary (10% of traffic, 30 min)')}")
    demo.functions.pop("model-deployer").stop()
    gated = [{**TARGETS[0], "kpi_gate": KPI_GATE}]
    demo.start("model-deployer", {"DEPLOY_TARGETS": json.dumps(gated), "EXECUTION_ROLE_ARN": ROLE, "DRY_RUN": "false"})
    v10 = demo.register("Approved", GOOD)
    demo.send("model-deployer", demo.package_event("model-package-approved.json", v10),
              "v10 approved: validation loss 0.31, offline CTR 8.4%, every offline gate passes (as v3's did)")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE (the canary is live)")
    ep = demo.sm.describe_endpoint(EndpointName=ENDPOINT)
    cfg = demo.sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
    for v in cfg["ProductionVariants"]:
        print(f"  {v['VariantName']}: {v['InitialVariantWeight']:.0%} of the traffic on {v['InitialInstanceCount']} instance(s)")
    demo.send("model-deployer", load_event("deployer-tick.json"), "A scheduled reconcile ten minutes in")
    half_hour_of_kpi(demo, live_ctr=0.084, candidate_ctr=0.071)
    demo.send("model-deployer", load_event("deployer-tick.json"), "The reconcile after the bake: the verdict")
    package = demo.sm.describe_model_package(ModelPackageName=v10)
    print(f"  v10 is {package['ModelApprovalStatus']}: {package.get('ApprovalDescription', '')}")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE (v9 alone again)")
    print(f"  the regression reached 10% of users for 30 minutes (0.05 of the traffic-hours); v3 reached everyone "
          f"for 6 hours (6 traffic-hours): {6 / 0.05:.0f} times less")


def half_hour_of_kpi(demo: Demo, live_ctr: float, candidate_ctr: float, impressions: int = 24_000) -> None:
    """What the application publishes per variant over a canary's half hour (`impressions` in all,
    a tenth of them the candidate's); then the half hour passes (the deployer reads the clock: the
    demo moves the canary's start back in the ledger)."""
    shares = [("AllTraffic", live_ctr, impressions * 9 // 10), ("AllTraffic-canary", candidate_ctr, impressions // 10)]
    for variant, ctr, impressions in shares:
        demo.cw.put_metric_data(Namespace=KPI_NAMESPACE, MetricData=[
            {"MetricName": name, "Value": value, "Timestamp": time.time(),
             "Dimensions": [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": variant}]}
            for name, value in [("ClickThroughRate", ctr), ("Impressions", impressions)]])
        print(f"  {variant} publishes CTR {ctr:.1%} over {impressions:,} impressions")
    demo.ddb.update_item(TableName=LEDGER, Key={"pk": {"S": f"endpoint#{ENDPOINT}"}, "sk": {"S": "deployment"}},
                         UpdateExpression="SET live_at = live_at - :half_hour",
                         ExpressionAttributeValues={":half_hour": {"N": str(30 * 60_000)}})
    print("  ⏩ 30 minutes later (the demo moves the canary's start back in the ledger)")


def capacity_as_code(demo: Demo) -> None:
    """The target declares its autoscaling; the deployer applies it and undoes a hand change."""
    print(f"\n{bold('Capacity as code: business hours in Asia/Tokyo')}")
    demo.functions.pop("model-deployer").stop()
    targets = [{**TARGETS[0], "kpi_gate": KPI_GATE, "capacity": CAPACITY}]
    demo.start("model-deployer", {"DEPLOY_TARGETS": json.dumps(targets), "EXECUTION_ROLE_ARN": ROLE, "DRY_RUN": "false"})
    demo.send("model-deployer", load_event("deployer-tick.json"), "A reconcile with the target's capacity declared")
    resource = f"endpoint/{ENDPOINT}/variant/AllTraffic"
    for a in demo.aas.describe_scheduled_actions(ServiceNamespace="sagemaker", ResourceId=resource)["ScheduledActions"]:
        bounds = a["ScalableTargetAction"]
        print(f"  {a['ScheduledActionName']}: {a['Schedule']} {a.get('Timezone')} -> {bounds['MinCapacity']}-{bounds['MaxCapacity']}")
    demo.aas.delete_scheduled_action(ServiceNamespace="sagemaker", ResourceId=resource,
                                     ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                                     ScheduledActionName="lifecycle-evenings")
    print("  ✎ someone deletes the evening schedule by hand")
    demo.send("model-deployer", load_event("deployer-tick.json"), "The next reconcile")


def staging_first(demo: Demo) -> None:
    """A second group with a staging endpoint before production: one approval flows through both."""
    group, staging, production = "mangaassist-search-mpg", "mangaassist-search-staging", "mangaassist-search-endpoint"
    print(f"\n{bold('Staging first: one approval of ' + group + ' flows through staging to production')}")
    demo.sm.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription="search ranking")
    for endpoint in (staging, production):
        demo.cw.put_metric_alarm(
            AlarmName=f"{endpoint}-5xx", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
            Dimensions=[{"Name": "EndpointName", "Value": endpoint}], Statistic="Sum", Period=60,
            EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
    base = {k: v for k, v in TARGETS[0].items() if k not in ("kpi_alarms", "scale_up_floor")}
    base["model_package_group"] = group
    # Each new version answers one search request before it keeps the traffic.
    base["smoke_test"] = {"body": '{"query": "one piece", "k": 5}', "required_fields": ["results"]}
    for endpoint in (staging, production):
        demo.control("invocations", {"endpoint": endpoint, "status": 200,
                                     "body": '{"results": [{"id": "op-1", "score": 0.97}]}'})
    targets = [
        {**TARGETS[0], "kpi_gate": KPI_GATE, "capacity": CAPACITY},
        {**base, "endpoint": staging, "rollback_alarms": [f"{staging}-5xx"]},
        {**base, "endpoint": production, "rollback_alarms": [f"{production}-5xx"],
         "promote_after": {"target": staging, "soak_minutes": 120}},
    ]
    demo.functions.pop("model-deployer").stop()
    demo.start("model-deployer", {"DEPLOY_TARGETS": json.dumps(targets), "EXECUTION_ROLE_ARN": ROLE, "DRY_RUN": "false"})
    arn = demo.sm.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved", CustomerMetadataProperties=GOOD,
        InferenceSpecification={"Containers": [{"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-gpu",
                                                "ModelDataUrl": f"s3://mangaassist-models/{group}/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    event = demo.package_event("model-package-approved.json", arn)
    event["detail"]["ModelPackageGroupName"] = group
    demo.send("model-deployer", event, "v1 of the search ranker approved")
    demo.wait_for_update()
    served = load_event("endpoint-in-service.json")
    served["detail"]["EndpointName"] = staging
    demo.send("model-deployer", served, f"Endpoint State Change: {staging} IN_SERVICE")
    demo.send("model-deployer", load_event("deployer-tick.json"), "A scheduled reconcile an hour into the soak")
    items = demo.ddb.query(TableName=LEDGER, KeyConditionExpression="pk = :pk",
                           ExpressionAttributeValues={":pk": {"S": f"endpoint#{staging}"}})["Items"]
    for item in items:
        times = [t for t in ("requested_at", "finished_at") if t in item]
        if times:
            demo.ddb.update_item(TableName=LEDGER, Key={"pk": item["pk"], "sk": item["sk"]},
                                 UpdateExpression="SET " + ", ".join(f"{t} = {t} - :two_hours" for t in times),
                                 ExpressionAttributeValues={":two_hours": {"N": str(120 * 60_000)}})
    demo.control("age-alarm", {"alarm": f"{staging}-5xx", "minutes": 120})
    print("  ⏩ two hours later (the demo moves staging's ledger and its alarm's last change back)")
    demo.send("model-deployer", load_event("deployer-tick.json"), "The reconcile after the soak")
    demo.wait_for_update()
    served["detail"]["EndpointName"] = production
    demo.send("model-deployer", served, f"Endpoint State Change: {production} IN_SERVICE")


def retraining_loop(demo: Demo, job: str) -> None:
    """The retraining the scan started ends as a candidate version, which a person approves and
    the deployer gates, canaries and promotes like any other; then the catalog is covered again."""
    print(f"\n{bold('The loop closes: ' + job + ' becomes the next version of ' + GROUP)}")
    demo.control("training-jobs", {"name": job, "status": "Completed",
                                   "metrics": {"validation_loss": 0.28, "offline_ctr": 0.089, "train_loss": 0.19}})
    # Training takes hours: the first canary's KPI is hours old when the next canary is judged.
    demo.app.age_metrics(KPI_NAMESPACE, 6 * 60)
    print("  ⏩ six hours later the training job completes (the local AWS ends it: validation loss 0.28, "
          "offline CTR 8.9%)")
    ended = load_event("training-job-completed.json")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{job}"
    ended["detail"].update({"TrainingJobName": job, "TrainingJobArn": arn})
    ended["resources"] = [arn]
    demo.send("drift-scanner", ended, "EventBridge: SageMaker Training Job State Change (Completed)")
    demo.send("drift-scanner", ended, "The same event delivered again")
    newest = demo.sm.list_model_packages(ModelPackageGroupName=GROUP, SortBy="CreationTime",
                                         SortOrder="Descending")["ModelPackageSummaryList"][0]
    candidate, version = newest["ModelPackageArn"], newest["ModelPackageVersion"]
    d = demo.sm.describe_model_package(ModelPackageName=candidate)
    print(f"  v{version}: {d['ModelApprovalStatus']}, {d['ModelPackageDescription']}")
    demo.sm.update_model_package(ModelPackageArn=candidate, ModelApprovalStatus="Approved",
                                 ApprovalDescription="reviewed by the recommendations lead")
    print(f"  ✎ a person approves v{version} in the registry")
    demo.send("model-deployer", demo.package_event("model-package-approved.json", candidate),
              f"v{version} approved: the gates read the job's own metrics")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE (the canary is live)")
    # Proving "not worse" takes more samples than proving worse: an evening's traffic.
    half_hour_of_kpi(demo, live_ctr=0.084, candidate_ctr=0.087, impressions=96_000)
    demo.send("model-deployer", load_event("deployer-tick.json"), "The reconcile after the bake: the verdict")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), f"Endpoint State Change: IN_SERVICE (v{version} alone)")
    demo.send("drift-scanner", {"schedule": "drift-scan"}, "The next drift scan, against the new adapter's cutoff")
    lineage(demo)


def lineage(demo: Demo) -> None:
    """The README's lineage query, walked from the version the endpoint serves back to the gap."""
    print(f"\n{bold('Lineage: from what ' + ENDPOINT + ' serves back to the titles that caused it')}")
    decisions = demo.ddb.query(
        TableName=LEDGER, KeyConditionExpression="pk = :pk AND begins_with(sk, :d)",
        FilterExpression="outcome IN (:deployed, :promoted)",
        ExpressionAttributeValues={":pk": {"S": f"endpoint#{ENDPOINT}"}, ":d": {"S": "decision#"},
                                   ":deployed": {"S": "deployed"}, ":promoted": {"S": "canary_passed"}},
    )["Items"]
    package = decisions[-1]["package"]["S"]
    print(f"  the deployer's last {decisions[-1]['outcome']['S']}: {package}")
    meta = demo.sm.describe_model_package(ModelPackageName=package).get("CustomerMetadataProperties", {})
    for key in ("training_job", "catalog_export_uri", "catalog_snapshot_date", "retraining_cause", "base_package"):
        print(f"    {key}: {meta.get(key)}")
    job = demo.sm.describe_training_job(TrainingJobName=meta["training_job"])
    trained_on = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    metrics = ", ".join(f"{m['MetricName']} {m['Value']:g}" for m in job.get("FinalMetricDataList", []))
    print(f"  the job {job['TrainingJobName']}: {job['TrainingJobStatus']}, trained on {trained_on}; {metrics}")
    scans = demo.ddb.query(
        TableName=LEDGER, KeyConditionExpression="pk = :pk AND begins_with(sk, :d)",
        FilterExpression="contains(#plan, :job)", ExpressionAttributeNames={"#plan": "plan"},
        ExpressionAttributeValues={":pk": {"S": f"adapter#{ADAPTER}"}, ":d": {"S": "decision#"},
                                   ":job": {"S": meta["training_job"]}},
    )["Items"]
    started = next(s for s in scans if s["outcome"]["S"] == "retraining")
    evidence = json.loads(started["evidence"]["S"])
    print(f"  the scan that started it ({started['at']['S'][:19]}): {started['reason']['S']}")
    print(f"    newest titles it had never seen: {', '.join(evidence['sample'][:3])}, ...")


def run(demo: Demo) -> None:
    print(bold("Starting the local AWS and seeding the MangaAssist fleet"))
    demo.seed()
    print(f"  local AWS at {demo.url}; group {GROUP} has v1 and v2 Approved; no endpoint yet")
    common = {"DEPLOY_TARGETS": json.dumps(TARGETS), "EXECUTION_ROLE_ARN": ROLE, "DRY_RUN": "false"}
    demo.start("model-deployer", common)
    demo.start("alarm-responder", common)

    demo.send("model-deployer", load_event("deployer-tick.json"), "Scheduled reconcile: the endpoint does not exist yet")
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE")

    # The seeds' incident: a promotion that passed offline evaluation hurts click-through rate.
    v3 = demo.register("Approved", GOOD)
    demo.send("model-deployer", demo.package_event("model-package-approved.json", v3), "v3 approved: passes its gates")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE (v3 live)")
    demo.impressions(48_000)
    ctr = demo.alarm_event("alarm-ctr-kpi.json")
    demo.send(
        "alarm-responder",
        ctr,
        "Six hours later: click-through rate 8.4% -> 7.1% on 48,000 impressions; the CTR alarm fires",
    )
    demo.send("alarm-responder", ctr, "The same alarm event delivered again")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE (v2 back)")
    demo.send("model-deployer", load_event("deployer-tick.json"), "Scheduled reconcile: does the deployer agree?")

    v4 = demo.register("Approved", {**GOOD, "validation_loss": "0.41"})
    demo.send(
        "model-deployer",
        demo.package_event("model-package-approved.json", v4),
        "v4 approved in the registry, but its validation loss is 0.41 (gate: max 0.35)",
    )

    v5 = demo.register("Approved", GOOD)
    approved_v5 = demo.package_event("model-package-approved.json", v5)
    demo.send("model-deployer", approved_v5, "v5 approved: passes its gates")
    demo.send("model-deployer", approved_v5, "The same approval delivered again (at-least-once delivery)")
    demo.send("alarm-responder", demo.alarm_event("alarm-latency-anomaly.json"),
              "Latency anomaly alarm fires while v5 is rolling out")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE")

    v6 = demo.register("Approved", GOOD)
    demo.send("model-deployer", demo.package_event("model-package-approved.json", v6), "v6 approved")
    demo.cw.set_alarm_state(
        AlarmName=ALARM_5XX,
        StateValue="ALARM",
        StateReason="Threshold Crossed: 1 datapoint [14.0] was greater than the threshold (1.0).",
    )
    print("  ! the 5XX alarm fires while traffic shifts to v6")
    demo.wait_for_update()
    demo.send("model-deployer", load_event("endpoint-in-service.json"), "Endpoint State Change: IN_SERVICE")
    demo.cw.set_alarm_state(AlarmName=ALARM_5XX, StateValue="OK", StateReason="recovered")
    wrong_conclusions(demo)

    demo.aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=f"endpoint/{ENDPOINT}/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=2,
        MaxCapacity=4,
    )
    demo.send(
        "alarm-responder",
        demo.alarm_event("alarm-no-capacity-scale-up.json"),
        "Evening traffic: a burst of 503s (NoCapacityInvocationFailures), alarm tagged lifecycle:action=scale-up",
    )
    demo.send("alarm-responder", load_event("alarm-ctr-ok.json"), "The CTR alarm returns to OK")
    kpi_canary(demo)
    capacity_as_code(demo)
    staging_first(demo)

    print(f"\n{bold('The catalog moves on: ' + str(DRIFT_NEW) + ' new titles since the adapter was trained')}")
    demo.seed_catalog(DRIFT_OLD, DRIFT_NEW)
    demo.start("drift-scanner", DRIFT_ENV)
    scanned = demo.send("drift-scanner", load_event("drift-scanner-schedule.json"), "Daily drift scan")
    demo.send("drift-scanner", {"schedule": "drift-scan"}, "The scan runs again the same day (Scheduler payload)")
    # Case 11: one retraining per gap. A second adapter's job from yesterday completed overnight; its
    # adapter awaits evaluation and approval. Today's scan sees the same gap and starts nothing.
    other = "mangaassist-search-lora"
    yesterday = time.strftime("%Y%m%d", time.gmtime(time.time() - 86400))
    job = f"{other}-catalog-{yesterday}"
    demo.sm.create_training_job(
        TrainingJobName=job, RoleArn=ROLE, AlgorithmSpecification={"TrainingImage": DRIFT_ENV["TRAINING_IMAGE"],
                                                                    "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{TRAINING_BUCKET}/adapters/{other}/"},
        ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 86400})
    demo.app.set_training_status(job, "Completed")
    demo.start("drift-scanner-search", {**DRIFT_ENV, "ADAPTER_NAME": other, "ENDPOINT_NAME": "",
                                         "TRAINING_CUTOFF": "2025-09-01"}, binary="drift-scanner")
    demo.send("drift-scanner-search", {"schedule": "drift-scan"},
              f"{other}: yesterday's retraining {job} completed overnight; today's scan, same gap")
    if scanned and scanned.get("training_job"):
        retraining_loop(demo, scanned["training_job"])

    print(f"\n{bold('The hourly sweep finds a year of experiments')}")
    demo.seed_fleet()
    sweep_env = {"DEPLOY_TARGETS": json.dumps(TARGETS), "REPORT_BUCKET": REPORT_BUCKET, "GRACE_HOURS": "24"}
    demo.start("endpoint-sweeper", sweep_env)
    dry = demo.send("endpoint-sweeper", load_event("endpoint-sweeper-schedule.json"),
                    "Hourly sweep, as installed in production: DRY_RUN=true")
    if dry:
        demo.sweep_report(dry["report_uri"])
    demo.functions.pop("endpoint-sweeper").stop()
    demo.start("endpoint-sweeper", {**sweep_env, "DRY_RUN": "false", "REMEDIATE": "true"})
    real = demo.send("endpoint-sweeper", load_event("endpoint-sweeper-schedule.json"),
                     "The reports looked right: DRY_RUN=false, REMEDIATE=true "
                     "(recs-ab-test-staging was used 10 h ago, after its mark: kept)")
    if real:
        demo.sweep_report(real["report_uri"])
    demo.functions.pop("endpoint-sweeper").stop()
    # Case 3: the same fleet seen by a staging install, in a dry run: its untagged endpoints are its own.
    demo.start("endpoint-sweeper", {**sweep_env, "ENVIRONMENT": "staging", "DEPLOY_TARGETS": "[]"})
    staging = demo.send("endpoint-sweeper", {"schedule": "sweep"},
                        "The same account seen by a staging install (ENVIRONMENT=staging, no targets, dry run): "
                        "untagged endpoints are staging's to sweep")
    if staging:
        demo.sweep_report(staging["report_uri"], only=["notebook-endpoint-untagged"])

    demo.send(
        "model-deployer",
        load_event("malformed-model-package-event.json"),
        "A malformed event (no ModelPackageArn)",
    )
    demo.send(
        "model-deployer",
        load_event("model-package-approved-unknown-group.json"),
        "An approval in a group no target deploys",
    )
    demo.send(
        "alarm-responder",
        load_event("malformed-alarm-event.json"),
        "An alarm event in a state CloudWatch does not have",
    )
    demo.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=str(ROOT / "dist"), help="where `make package` put the zips")
    parser.add_argument("--bin-dir", help="run these binaries (a `cargo build` output) instead of the zips")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifecycle-demo-") as tmp:
        workdir = Path(os.environ.get("DEMO_WORKDIR", tmp))
        demo = Demo(Path(args.dist), workdir, Path(args.bin_dir) if args.bin_dir else None)
        try:
            run(demo)
        finally:
            demo.stop()


if __name__ == "__main__":
    main()

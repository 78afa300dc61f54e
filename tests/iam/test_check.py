"""Tests of the IAM check and of the template's promises: python -m unittest discover tests/iam"""

import json
import sys
import threading
import unittest
import urllib.request
from pathlib import Path

import boto3

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "localaws"))

import check  # noqa: E402
import localaws  # noqa: E402

TEMPLATE = check.Template(HERE.parents[1] / "template.yaml")


def call(function, service, operation, facts, test_id="t1", region="us-east-1"):
    return {"access_key": f"test-{test_id}", "function": function, "service": service,
            "operation": operation, "region": region, "status": 200, "facts": facts}


def problems(*calls):
    found, _ = check.check(TEMPLATE, calls)
    return [p for p in found if "no integration test exercised" not in p]


class PolicyTest(unittest.TestCase):
    def test_a_deployer_write_under_the_prefix_is_allowed(self):
        self.assertEqual(problems(call("model-deployer", "sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "t1-ep-v2"})), [])

    def test_a_deployer_write_outside_the_prefix_is_refused(self):
        found = problems(call("model-deployer", "sagemaker", "UpdateEndpoint", {"EndpointName": "other-ep", "EndpointConfigName": "t1-ep-v2"}))
        self.assertEqual(len(found), 1, found)
        self.assertIn("endpoint/other-ep", found[0])

    def test_names_are_matched_lower_case_as_sagemaker_writes_them_in_arns(self):
        self.assertEqual(problems(call("model-deployer", "sagemaker", "CreateModel", {"ModelName": "T1-EP-model", "ExecutionRoleArn": check.ROLE_ARN})), [])
        # ... so an upper-case prefix would match nothing, and the template refuses one.
        self.assertTrue(TEMPLATE.validate({"ManagedNamePrefix": "Recs-"}))
        self.assertTrue(TEMPLATE.validate({"ManagedNamePrefix": ""}))
        self.assertTrue(TEMPLATE.validate({"AdapterName": "MangaLora"}))
        self.assertEqual(TEMPLATE.validate({"ManagedNamePrefix": "recs-", "AdapterName": "manga-lora"}), [])

    def test_passing_another_role_is_refused(self):
        found = problems(call("model-deployer", "sagemaker", "CreateModel", {"ModelName": "t1-ep-m", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/admin"}))
        self.assertTrue(any("iam:PassRole" in p for p in found), found)

    def test_a_protected_endpoint_cannot_be_deleted_or_unprotected_by_the_sweeper(self):
        protected = {"ResourceTags": {"endpoint": {"ProtectedFromAutoStop": "TRUE"}}}
        found = problems(call("endpoint-sweeper", "sagemaker", "DeleteEndpoint", {"EndpointName": "x", **protected}))
        self.assertTrue(found and "NeverTouchProtected" in found[0], found)
        arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/x"
        found = problems(call("endpoint-sweeper", "sagemaker", "DeleteTags", {"ResourceArn": arn, "TagKeys": ["protectedfromautostop"]}))
        self.assertTrue(found and "NeverRemoveProtection" in found[0], found)
        self.assertEqual(problems(call("endpoint-sweeper", "sagemaker", "DeleteEndpoint", {"EndpointName": "x"})), [])

    def test_target_tracking_needs_the_callers_alarm_permissions(self):
        policy = {"PolicyType": "TargetTrackingScaling", "ResourceId": "endpoint/x/variant/AllTraffic", "ServiceNamespace": "sagemaker"}
        needs = check.needs_of(call("endpoint-sweeper", "application-autoscaling", "PutScalingPolicy", policy))
        self.assertIn("cloudwatch:PutMetricAlarm", [n.action for n in needs])
        self.assertEqual(problems(call("endpoint-sweeper", "application-autoscaling", "PutScalingPolicy", policy)), [])
        # Without the statement, the check catches it (as it did before the template had it).
        statements = [s for s in TEMPLATE.statements("endpoint-sweeper", check.stack_parameters("t1", "us-east-1"), "us-east-1")
                      if s.get("Sid") != "TargetTrackingAlarms"]
        refused = [n for n in needs if not check.judge(statements, n)[0]]
        self.assertEqual({n.action for n in refused}, {"cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"})

    def test_kms_keys_are_usable_only_through_the_services_and_only_those_named(self):
        key = check.stack_parameters("t1", "us-east-1")["KmsKeyArns"][0]
        report = {"Bucket": "t1-evaluations", "Key": "v2/statistics.json", "SSEKMSKeyId": key}
        self.assertEqual(problems(call("model-deployer", "s3", "GetObject", report)), [])
        other = dict(report, SSEKMSKeyId="arn:aws:kms:us-east-1:123456789012:key/someone-elses")
        self.assertTrue(any("kms:Decrypt" in p for p in problems(call("model-deployer", "s3", "GetObject", other))))
        direct = check.Need("kms:Decrypt", key, {})
        statements = TEMPLATE.statements("model-deployer", check.stack_parameters("t1", "us-east-1"), "us-east-1")
        self.assertFalse(check.judge(statements, direct)[0], "a key used outside S3 and SageMaker")

    def test_an_allowed_action_no_test_exercised_is_reported(self):
        found, _ = check.check(TEMPLATE, [call("drift-scanner", "dynamodb", "PutItem", {"TableName": "t1-ledger"})])
        self.assertTrue(any("drift-scanner: its policy allows sagemaker:createtrainingjob" in p for p in found), found)

    def test_the_protection_deny_names_the_key_the_sweeper_reads(self):
        key = TEMPLATE.environment("endpoint-sweeper")["PROTECTION_TAG_KEY"]
        statements = TEMPLATE.statements("endpoint-sweeper", check.stack_parameters("t1", "us-east-1"), "us-east-1")
        deny = next(s for s in statements if s.get("Sid") == "NeverTouchProtected")
        self.assertEqual(list(deny["Condition"]["StringEqualsIgnoreCase"]), [f"aws:ResourceTag/{key}"])
        unprotect = next(s for s in statements if s.get("Sid") == "NeverRemoveProtection")
        self.assertEqual(unprotect["Condition"]["ForAnyValue:StringEqualsIgnoreCase"]["aws:TagKeys"], [key])


class AlertsTest(unittest.TestCase):
    """Every alarm of the template reaches the alert topic, in ALARM and back to OK."""

    @classmethod
    def setUpClass(cls):
        cls.app, cls.server = localaws.serve("127.0.0.1", 0, update_seconds=3600)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        host, port = cls.server.server_address[:2]
        cls.url = f"http://{host}:{port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def client(self, service):
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="alerts", aws_secret_access_key="secret")

    def control(self, path, payload=None):
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(f"{self.url}/_localaws/{path}", data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    def alarms(self):
        return {name: r["Properties"] for name, r in TEMPLATE.doc["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}

    def test_every_alarm_notifies_the_topic_in_alarm_and_ok(self):
        for name, props in self.alarms().items():
            self.assertEqual(props.get("AlarmActions"), [{"Ref": "AlertTopic"}], name)
            self.assertEqual(props.get("OKActions"), [{"Ref": "AlertTopic"}], name)

    def test_a_person_subscribed_to_the_topic_hears_each_alarm_fire_and_clear(self):
        sns, cw = self.client("sns"), self.client("cloudwatch")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        queue = self.control("queue", {"name": "on-call"})["arn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue)
        for name, props in self.alarms().items():
            spec = {k: v for k, v in props.items() if k in ("Namespace", "MetricName", "Statistic", "Period", "EvaluationPeriods",
                                                            "Threshold", "ComparisonOperator", "TreatMissingData", "AlarmDescription")}
            if "Metrics" in props:
                spec["Metrics"] = [{k: v for k, v in m.items()} for m in props["Metrics"]]
            dims = [{"Name": d["Name"], "Value": name} for d in props.get("Dimensions", [])]
            cw.put_metric_alarm(AlarmName=name, AlarmActions=[topic], OKActions=[topic],
                                **({"Dimensions": dims} if dims else {}), **spec)
            cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="test")
            cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="test")
        messages = [json.loads(json.loads(b)["Message"]) for b in self.control("messages?queue=on-call")["messages"]]
        heard = {(m["AlarmName"], m["NewStateValue"]) for m in messages}
        expected = {(name, state) for name in self.alarms() for state in ("ALARM", "OK")}
        self.assertEqual(heard, expected)


    def test_a_decision_that_needs_a_person_reaches_the_topic_through_the_templates_rule(self):
        sns, events = self.client("sns"), self.client("events")
        topic = sns.create_topic(Name="alerts-for-decisions")["TopicArn"]
        queue = self.control("queue", {"name": "on-call-decisions"})["arn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue)
        rule = TEMPLATE.doc["Resources"]["NeedsPersonRule"]["Properties"]
        events.put_rule(Name="needs-person", EventPattern=json.dumps(rule["EventPattern"]))
        events.put_targets(Rule="needs-person", Targets=[{"Id": "topic", "Arn": topic}])
        example = json.loads((HERE.parents[1] / "events" / "lifecycle-decision.json").read_text())
        for severity in ("needs_person", "acted"):
            detail = dict(example["detail"], severity=severity)
            events.put_events(Entries=[{"Source": example["source"], "DetailType": example["detail-type"],
                                        "Detail": json.dumps(detail)}])
        bodies = self.control("messages?queue=on-call-decisions")["messages"]
        delivered = [json.loads(json.loads(b)["Message"])["detail"] for b in bodies]
        self.assertEqual([d["severity"] for d in delivered], ["needs_person"])
        self.assertEqual(delivered[0]["reason"], example["detail"]["reason"])


if __name__ == "__main__":
    unittest.main()

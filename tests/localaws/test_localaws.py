"""Tests of the compatibility layer itself: python -m unittest discover tests/localaws"""

import datetime as dt
import json
import threading
import unittest
import urllib.request

import boto3
import cbor2

import localaws

KEY = "layer-test"


class LocalAwsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.app, cls.server = localaws.serve("127.0.0.1", 0, update_seconds=3600)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        host, port = cls.server.server_address[:2]
        cls.url = f"http://{host}:{port}"

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.shutdown()

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=KEY,
            aws_secret_access_key="secret",
        )

    def cbor(self, op: str, payload: dict) -> tuple[int, dict, dict]:
        """A CloudWatch call exactly as aws-sdk-cloudwatch for Rust sends it."""
        req = urllib.request.Request(
            f"{self.url}/service/GraniteServiceVersion20100801/operation/{op}",
            data=cbor2.dumps(payload, datetime_as_timestamp=True),
            method="POST",
            headers={
                "smithy-protocol": "rpc-v2-cbor",
                "Content-Type": "application/cbor",
                "Accept": "application/cbor",
                "Authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/20261122/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=x",
            },
        )
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, dict(r.headers), cbor2.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), cbor2.loads(e.read())

    def control(self, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(f"{self.url}/_localaws/{path}", data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    # ---- CloudWatch over CBOR
    def test_cbor_metric_data_round_trips_with_timestamps_as_tag_1(self):
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        status, headers, _ = self.cbor(
            "PutMetricData",
            {
                "Namespace": "Layer/Test",
                "MetricData": [
                    {
                        "MetricName": "Invocations",
                        "Dimensions": [{"Name": "EndpointName", "Value": "ep-a"}],
                        "Timestamp": now,
                        "Value": 7.0,
                    }
                ],
            },
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("smithy-protocol"), "rpc-v2-cbor")
        status, _, out = self.cbor(
            "GetMetricData",
            {
                "MetricDataQueries": [
                    {
                        "Id": "q0",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "Layer/Test",
                                "MetricName": "Invocations",
                                "Dimensions": [{"Name": "EndpointName", "Value": "ep-a"}],
                            },
                            "Period": 60,
                            "Stat": "Sum",
                        },
                    }
                ],
                "StartTime": now - dt.timedelta(minutes=5),
                "EndTime": now + dt.timedelta(minutes=5),
            },
        )
        self.assertEqual(status, 200)
        result = out["MetricDataResults"][0]
        self.assertEqual(result["Values"], [7.0])
        self.assertIsInstance(result["Timestamps"][0], dt.datetime)

    def test_cbor_alarms_are_shared_with_the_json_protocol(self):
        self.client("cloudwatch").put_metric_alarm(
            AlarmName="layer-5xx",
            Namespace="AWS/SageMaker",
            MetricName="Invocation5XXErrors",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanThreshold",
        )
        status, _, _ = self.cbor(
            "SetAlarmState", {"AlarmName": "layer-5xx", "StateValue": "ALARM", "StateReason": "test"}
        )
        self.assertEqual(status, 200)
        _, _, out = self.cbor("DescribeAlarms", {"AlarmNames": ["layer-5xx"]})
        alarm = out["MetricAlarms"][0]
        self.assertEqual(alarm["StateValue"], "ALARM")
        self.assertIsInstance(alarm["StateUpdatedTimestamp"], dt.datetime)
        self.assertIsInstance(alarm["Threshold"], float)

    def test_cbor_errors_carry_a_smithy_type(self):
        status, _, out = self.cbor("SetAlarmState", {"AlarmName": "no-such", "StateValue": "OK", "StateReason": "x"})
        self.assertEqual(status, 404)
        self.assertEqual(out["__type"], "com.amazonaws.cloudwatch#ResourceNotFound")

    # ---- SageMaker UpdateEndpoint
    def endpoint(self, name: str, alarm: str | None = None) -> None:
        sm = self.client("sagemaker")
        for n in ("a", "b"):
            sm.create_model(ModelName=f"{name}-m{n}", ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
                            PrimaryContainer={"Image": "img"})
            sm.create_endpoint_config(
                EndpointConfigName=f"{name}-c{n}",
                ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": f"{name}-m{n}",
                                     "InstanceType": "ml.m5.large", "InitialInstanceCount": 2}],
            )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-ca")

    def deployment_config(self, alarm: str) -> dict:
        return {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 60}
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": alarm}]},
        }

    def test_update_endpoint_goes_updating_then_in_service_on_the_new_config(self):
        sm = self.client("sagemaker")
        self.endpoint("ep-ok")
        sm.update_endpoint(EndpointName="ep-ok", EndpointConfigName="ep-ok-cb",
                           DeploymentConfig=self.deployment_config("quiet-alarm"))
        d = sm.describe_endpoint(EndpointName="ep-ok")
        self.assertEqual(d["EndpointStatus"], "Updating")
        self.assertEqual(d["EndpointConfigName"], "ep-ok-ca")
        self.assertEqual(d["PendingDeploymentSummary"]["EndpointConfigName"], "ep-ok-cb")
        with self.assertRaises(sm.exceptions.ClientError) as refused:
            sm.update_endpoint(EndpointName="ep-ok", EndpointConfigName="ep-ok-ca")
        self.assertIn("Cannot update in-progress endpoint", str(refused.exception))
        self.control("settle", {"endpoint": "ep-ok"})
        d = sm.describe_endpoint(EndpointName="ep-ok")
        self.assertEqual((d["EndpointStatus"], d["EndpointConfigName"]), ("InService", "ep-ok-cb"))
        self.assertEqual(
            d["LastDeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"][0]["AlarmName"], "quiet-alarm"
        )

    def test_a_firing_rollback_alarm_leaves_the_old_config_without_error(self):
        sm, cw = self.client("sagemaker"), self.client("cloudwatch")
        self.endpoint("ep-bad")
        cw.put_metric_alarm(AlarmName="ep-bad-5xx", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
                            Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1.0,
                            ComparisonOperator="GreaterThanThreshold")
        sm.update_endpoint(EndpointName="ep-bad", EndpointConfigName="ep-bad-cb",
                           DeploymentConfig=self.deployment_config("ep-bad-5xx"))
        cw.set_alarm_state(AlarmName="ep-bad-5xx", StateValue="ALARM", StateReason="5XX burst")
        settled = self.control("settle", {"endpoint": "ep-bad"})["settled"]
        self.assertEqual(settled[0]["outcome"], "RolledBack")
        self.assertEqual(settled[0]["firing_alarms"], ["ep-bad-5xx"])
        d = sm.describe_endpoint(EndpointName="ep-bad")
        self.assertEqual((d["EndpointStatus"], d["EndpointConfigName"]), ("InService", "ep-bad-ca"))

    def test_update_of_a_missing_endpoint_is_a_validation_error(self):
        sm = self.client("sagemaker")
        with self.assertRaises(sm.exceptions.ClientError) as e:
            sm.update_endpoint(EndpointName="nope", EndpointConfigName="x")
        self.assertEqual(e.exception.response["Error"]["Code"], "ValidationException")

    # ---- training jobs
    def test_a_new_training_job_runs_until_told_otherwise(self):
        sm = self.client("sagemaker")
        sm.create_training_job(
            TrainingJobName="adapter-20260301",
            AlgorithmSpecification={"TrainingImage": "img:1", "TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::123456789012:role/train",
            OutputDataConfig={"S3OutputPath": "s3://out/"},
            ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
        )
        status = lambda: sm.describe_training_job(TrainingJobName="adapter-20260301")["TrainingJobStatus"]  # noqa: E731
        self.assertEqual(status(), "InProgress")
        running = sm.list_training_jobs(NameContains="adapter", StatusEquals="InProgress")["TrainingJobSummaries"]
        self.assertEqual([j["TrainingJobName"] for j in running], ["adapter-20260301"])
        self.control("training-jobs", {"name": "adapter-20260301", "status": "Completed"})
        self.assertEqual(status(), "Completed")

    def test_s3_calls_are_logged_by_operation_name(self):
        s3 = self.client("s3")
        s3.create_bucket(Bucket="log-bucket")
        up = s3.create_multipart_upload(Bucket="log-bucket", Key="a/b.jsonl")
        part = s3.upload_part(Bucket="log-bucket", Key="a/b.jsonl", UploadId=up["UploadId"], PartNumber=1, Body=b"{}\n")
        s3.complete_multipart_upload(
            Bucket="log-bucket", Key="a/b.jsonl", UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        s3.head_object(Bucket="log-bucket", Key="a/b.jsonl")
        ops = [c["operation"] for c in self.control("calls?access_key=" + KEY)["calls"] if c["service"] == "s3"]
        self.assertEqual(
            ops[-5:],
            ["CreateBucket", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "HeadObject"],
        )

    # ---- call log
    def test_the_call_log_attributes_calls_to_their_access_key_and_resource(self):
        sm = self.client("sagemaker")
        self.endpoint("ep-log")
        calls = self.control("calls?access_key=" + KEY)["calls"]
        mine = [c for c in calls if c["resource"] == "ep-log"]
        self.assertEqual([c["operation"] for c in mine], ["CreateEndpoint"])
        self.assertTrue(mine[0]["mutating"])
        self.assertEqual(self.control("calls?access_key=someone-else")["calls"], [])
        del sm


if __name__ == "__main__":
    unittest.main()

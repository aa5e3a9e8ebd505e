"""A small TRE in the AWS emulator for `scripts/demo`, driven with boto3 (installed with moto).

  seed DIR     Glue studies under the registered data lake location, alice's workspace role and
               EC2 workspace (running as the role through its instance profile), the trail
               bucket, the identity file DIR/identity.json and the workspace registry
               DIR/workspaces.json
  drift N      an out-of-band Lake Formation grant, and the CloudTrail log file that records it
  grants       Lake Formation permissions of alice's workspace role
  put KEY TEXT a file in the egress-store bucket (a researcher saving results to egress)
"""
import gzip
import json
import sys
from datetime import datetime, timezone

import boto3

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/swb-ws-alice"
BUCKET = "tre-org-trail"
ORG = "o-tre"
EGRESS_BUCKETS = ["tre-egress-store", "tre-egress-staging", "tre-egress-approved"]


def client(name):
    return boto3.client(name, region_name="us-east-1")


def seed(directory):
    glue = client("glue")
    for db, table, max_access in [("genomics", "gwas_2024", "readwrite"), ("cardio", "ukb", "readonly")]:
        glue.create_database(DatabaseInput={"Name": db})
        glue.create_table(
            DatabaseName=db,
            TableInput={
                "Name": table,
                "StorageDescriptor": {"Location": f"s3://tre-datalake/{db}/{table}/"},
                "Parameters": {"tre:project": "proj-genomics", "tre:classification": "internal",
                               "tre:maxAccess": max_access},
            },
        )
    client("lakeformation").register_resource(ResourceArn="arn:aws:s3:::tre-datalake",
                                              UseServiceLinkedRole=True)
    iam = client("iam")
    iam.create_role(
        RoleName="swb-ws-alice",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        Tags=[{"Key": "tre:workspace", "Value": "ws-alice-ec2"}],
    )
    profile = iam.create_instance_profile(InstanceProfileName="swb-ws-alice")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="swb-ws-alice", RoleName="swb-ws-alice")
    tags = {"tre:workspace": "ws-alice-ec2", "tre:owner": "alice",
            "tre:workspace-type": "ec2-linux-approved", "backup": "true", "tre:role-arn": ROLE}
    instance = client("ec2").run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
        IamInstanceProfile={"Arn": profile["Arn"]},
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )["Instances"][0]["InstanceId"]
    # What Service Workbench records when it provisions the workspace: the owner comes from
    # here, never from the instance's tags.
    registry = {"workspaces": [{"id": "ws-alice-ec2", "project": "proj-genomics", "owner": "alice",
                                "workspaceType": "ec2-linux-approved", "kind": "ec2",
                                "instance": instance}]}
    with open(f"{directory}/workspaces.json", "w") as f:
        json.dump(registry, f, indent=1)
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    # Egress: requests pin object versions, so the buckets are versioned.
    for bucket in EGRESS_BUCKETS:
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client("sns").create_topic(Name="tre-egress")
    researcher = {"type": "Tre::Role", "id": "Researcher"}

    def staff(name, *roles):
        return {"uid": {"type": "Tre::User", "id": name}, "attrs": {"status": "active"},
                "parents": [{"type": "Tre::Role", "id": r} for r in roles]}
    identity = [
        {"uid": researcher, "attrs": {}, "parents": []},
        {"uid": {"type": "Tre::User", "id": "alice"}, "attrs": {"status": "active"},
         "parents": [researcher, {"type": "Tre::Project", "id": "proj-genomics"},
                     {"type": "Tre::AccessGroup", "id": "genomics/gwas_2024#writers"}]},
        {"uid": {"type": "Tre::WorkspaceType", "id": "ec2-linux-approved"},
         "attrs": {"approved": True, "allowRoles": [{"__entity": researcher}], "denyRoles": [],
                   "backupAllowed": True}, "parents": []},
        {"uid": {"type": "Tre::Role", "id": "InformationGovernance"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Tre::Role", "id": "ResearchIT"}, "attrs": {}, "parents": []},
        staff("carol", "InformationGovernance"),
        staff("dave", "ResearchIT"),
        staff("gina", "InformationGovernance"),
    ]
    with open(f"{directory}/identity.json", "w") as f:
        json.dump(identity, f, indent=1)


def drift(n):
    client("lakeformation").grant_permissions(
        Principal={"DataLakePrincipalIdentifier": ROLE},
        Resource={"Table": {"DatabaseName": "cardio", "Name": "ukb"}},
        Permissions=["SELECT"],
    )
    now = datetime.now(timezone.utc)
    record = {
        "eventVersion": "1.08", "eventID": f"demo-drift-{n}",
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "lakeformation.amazonaws.com", "eventName": "GrantPermissions",
        "awsRegion": "us-east-1", "recipientAccountId": ACCOUNT,
        "userIdentity": {"type": "AssumedRole", "accountId": ACCOUNT,
                         "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/mallory"},
        "requestParameters": {"principal": {"dataLakePrincipalIdentifier": ROLE},
                              "resource": {"table": {"databaseName": "cardio", "name": "ukb"}},
                              "permissions": ["SELECT"]},
    }
    key = (f"AWSLogs/{ORG}/{ACCOUNT}/CloudTrail/us-east-1/{now:%Y/%m/%d}/"
           f"{ACCOUNT}_CloudTrail_us-east-1_{now:%Y%m%dT%H%M}Z_demo{n}.json.gz")
    body = gzip.compress(json.dumps({"Records": [record]}).encode())
    client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    print(f"mallory granted SELECT on cardio.ukb to {ROLE}; the trail delivered {key}")


def grants():
    out = client("lakeformation").list_permissions()
    for p in out["PrincipalResourcePermissions"]:
        if p["Principal"]["DataLakePrincipalIdentifier"] == ROLE and p["Permissions"]:
            t = p["Resource"].get("Table", {})
            print(f"  {t.get('DatabaseName')}.{t.get('Name')}: {', '.join(sorted(p['Permissions']))}")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "seed":
        seed(sys.argv[2])
    elif command == "drift":
        drift(sys.argv[2] if len(sys.argv) > 2 else "1")
    elif command == "grants":
        grants()
    elif command == "put" and len(sys.argv) == 4:
        client("s3").put_object(Bucket="tre-egress-store", Key=sys.argv[2], Body=sys.argv[3].encode())
    else:
        sys.exit(__doc__)

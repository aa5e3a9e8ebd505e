//! The trail-status and identity collectors against the AWS emulator and the file system.

use std::process::Output;

use serde_json::{json, Value};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, Tre};

const ACCOUNT: &str = "111111111111";
const ROLE: &str = "arn:aws:iam::111111111111:role/tregov-reader";

fn tregov(tre: &Tre, moto: Option<&Moto>, config: &std::path::Path, args: &[&str]) -> Output {
    tre.run_with(moto, config, args)
}

fn entity(tre: &Tre, uid: &str) -> Option<Value> {
    let out = tre.run(&["--output", "json", "entities", "get", uid]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("json"))
}

#[test]
fn a_trail_that_stops_logging_is_seen_through_the_projects_role() {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The trail lives in the project account, reached by assuming the project's role.
    let (client, arn) = rt.block_on(async {
        let base = moto.sdk_config().await;
        let s3 = moto.s3().await;
        s3.create_bucket()
            .bucket("project-trail")
            .send()
            .await
            .expect("bucket");
        let role = aws_config::sts::AssumeRoleProvider::builder(ROLE)
            .session_name("test")
            .configure(&base)
            .build()
            .await;
        let sdk = base
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(role),
            )
            .build();
        let client = aws_sdk_cloudtrail::Client::new(&sdk);
        let trail = client
            .create_trail()
            .name("tre-trail")
            .s3_bucket_name("project-trail")
            .is_multi_region_trail(true)
            .send()
            .await
            .expect("trail");
        let arn = trail.trail_arn().expect("arn").to_string();
        client
            .start_logging()
            .name(&arn)
            .send()
            .await
            .expect("start");
        (client, arn)
    });
    assert!(arn.contains(ACCOUNT), "{arn}");
    let tre = Tre::new();
    let cfg = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &cfg,
        format!("max_attempts = 1\n[[projects]]\nid = \"proj-genomics\"\naccount_id = \"{ACCOUNT}\"\nrole_arn = \"{ROLE}\"\n"),
    )
    .expect("config");
    let uid = format!("Tre::Trail::\"{ACCOUNT}/{arn}\"");

    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trail = entity(&tre, &uid).expect("trail entity");
    assert_eq!(trail["attrs"]["isLogging"], true);
    assert_eq!(trail["attrs"]["isMultiRegionTrail"], true);

    rt.block_on(async { client.stop_logging().name(&arn).send().await.expect("stop") });
    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        entity(&tre, &uid).expect("trail")["attrs"]["isLogging"],
        false
    );
}

#[test]
fn the_identity_file_is_reread_each_pass_and_a_bad_edit_changes_nothing() {
    let tre = Tre::new();
    let file = tre.dir.path().join("identity.entities.json");
    let people = |users: &[&str]| {
        let list: Vec<Value> = users
            .iter()
            .map(|u| {
                serde_json::json!({"uid": {"type": "Tre::User", "id": u}, "attrs": {"status": "active"},
                    "parents": [{"type": "Tre::Role", "id": "Researcher"}]})
            })
            .collect();
        serde_json::to_string_pretty(&list).expect("json")
    };
    std::fs::write(&file, people(&["alice", "bob"])).expect("write");
    let cfg = tre.dir.path().join("tregov.toml");
    std::fs::write(&cfg, "[identity]\nentities = \"identity.entities.json\"\n").expect("config");

    let out = tregov(&tre, None, &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(entity(&tre, r#"Tre::User::"bob""#).is_some());

    // bob leaves: the next pass removes him.
    std::fs::write(&file, people(&["alice"])).expect("write");
    assert!(tregov(&tre, None, &cfg, &["collect", "--once"])
        .status
        .success());
    assert!(entity(&tre, r#"Tre::User::"bob""#).is_none());
    assert!(entity(&tre, r#"Tre::User::"alice""#).is_some());

    // A broken file is reported and the last good identities stay.
    std::fs::write(
        &file,
        "[{\"uid\": {\"type\": \"Tre::User\", \"id\": \"carol\"}, \"attrs\": {}}]",
    )
    .expect("write");
    let out = tregov(&tre, None, &cfg, &["--output", "json", "collect", "--once"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(report["identity"]["errors"][0]
        .as_str()
        .unwrap_or("")
        .contains("identity.entities.json"));
    assert!(entity(&tre, r#"Tre::User::"alice""#).is_some());
    assert!(entity(&tre, r#"Tre::User::"carol""#).is_none());
}

/// moto's default account: what un-assumed test credentials act in.
const DEFAULT_ACCOUNT: &str = "123456789012";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn project_config(tre: &Tre, extra: &str) -> std::path::PathBuf {
    let path = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &path,
        format!("max_attempts = 1\n[[projects]]\nid = \"proj-genomics\"\naccount_id = \"{DEFAULT_ACCOUNT}\"\n{extra}"),
    )
    .expect("config");
    path
}

fn observed(tre: &Tre, kind: &str) -> Vec<Value> {
    let out = tre.run(&["--output", "json", "observed", "--kind", kind]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn glue_tables_of_tre_projects_become_datasets_and_every_lake_formation_permission_is_seen() {
    let moto = Moto::start();
    let role = format!("arn:aws:iam::{DEFAULT_ACCOUNT}:role/swb-ws-alice");
    runtime().block_on(async {
        let sdk = moto.sdk_config().await;
        let glue = aws_sdk_glue::Client::new(&sdk);
        glue.create_database()
            .database_input(
                aws_sdk_glue::types::DatabaseInput::builder()
                    .name("genomics")
                    .build()
                    .expect("db"),
            )
            .send()
            .await
            .expect("database");
        for (name, tre) in [("gwas_2024", true), ("scratch", false)] {
            let mut input = aws_sdk_glue::types::TableInput::builder()
                .name(name)
                .storage_descriptor(
                    aws_sdk_glue::types::StorageDescriptor::builder()
                        .location(format!("s3://tre-datalake/genomics/{name}/"))
                        .build(),
                );
            if tre {
                input = input
                    .parameters("tre:project", "proj-genomics")
                    .parameters("tre:classification", "restricted")
                    .parameters("tre:maxAccess", "readwrite");
            }
            glue.create_table()
                .database_name("genomics")
                .table_input(input.build().expect("table"))
                .send()
                .await
                .expect("table");
        }
        let lf = aws_sdk_lakeformation::Client::new(&sdk);
        lf.register_resource()
            .resource_arn("arn:aws:s3:::tre-datalake")
            .use_service_linked_role(true)
            .send()
            .await
            .expect("register");
        lf.create_lf_tag()
            .tag_key("classification")
            .tag_values("restricted")
            .tag_values("internal")
            .send()
            .await
            .expect("lf-tag");
        lf.grant_permissions()
            .principal(
                aws_sdk_lakeformation::types::DataLakePrincipal::builder()
                    .data_lake_principal_identifier(&role)
                    .build(),
            )
            .resource(
                aws_sdk_lakeformation::types::Resource::builder()
                    .table(
                        aws_sdk_lakeformation::types::TableResource::builder()
                            .database_name("genomics")
                            .name("gwas_2024")
                            .build()
                            .expect("table resource"),
                    )
                    .build(),
            )
            .permissions(aws_sdk_lakeformation::types::Permission::Select)
            .permissions(aws_sdk_lakeformation::types::Permission::Describe)
            .send()
            .await
            .expect("grant");
    });
    let tre = Tre::new();
    let cfg = project_config(
        &tre,
        &format!("[datalake]\naccount_id = \"{DEFAULT_ACCOUNT}\"\n"),
    );
    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let ds = entity(&tre, r#"Tre::Dataset::"genomics/gwas_2024""#).expect("dataset");
    assert_eq!(ds["attrs"]["classification"], "restricted");
    assert_eq!(ds["attrs"]["maxAccess"], "readwrite");
    assert_eq!(
        ds["attrs"]["location"],
        "s3://tre-datalake/genomics/gwas_2024/"
    );
    assert!(entity(&tre, r#"Tre::Dataset::"genomics/scratch""#).is_none());
    assert!(entity(&tre, r#"Tre::Project::"proj-genomics""#).is_some());

    let grants = observed(&tre, "lf-permission");
    let grant = grants
        .iter()
        .find(|g| g["body"]["principal"] == role.as_str())
        .expect("the grant");
    assert_eq!(
        grant["body"]["permissions"],
        serde_json::json!(["DESCRIBE", "SELECT"])
    );
    assert_eq!(grant["body"]["resource"]["table"]["name"], "gwas_2024");
    assert_eq!(observed(&tre, "lf-location").len(), 1);
    assert_eq!(
        observed(&tre, "lf-tag")[0]["body"]["values"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn iam_roles_are_seen_with_tags_and_decoded_policies() {
    let moto = Moto::start();
    let policy_arn = runtime().block_on(async {
        let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
        moto.create_role("swb-ws-alice", &[("tre:workspace", "ws-alice")])
            .await;
        iam.put_role_policy()
            .role_name("swb-ws-alice")
            .policy_name("study-access")
            .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject*","Resource":"arn:aws:s3:::tre-datalake/genomics/gwas_2024/*"}]}"#)
            .send()
            .await
            .expect("inline policy");
        let policy = iam
            .create_policy()
            .policy_name("deny-provision")
            .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"servicecatalog:ProvisionProduct","Resource":"*"}]}"#)
            .send()
            .await
            .expect("managed policy");
        let arn = policy.policy().and_then(|p| p.arn()).expect("arn").to_string();
        iam.attach_role_policy()
            .role_name("swb-ws-alice")
            .policy_arn(&arn)
            .send()
            .await
            .expect("attach");
        arn
    });
    let tre = Tre::new();
    let cfg = project_config(&tre, "");
    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let roles = observed(&tre, "iam-role");
    let role = roles
        .iter()
        .find(|r| r["body"]["name"] == "swb-ws-alice")
        .expect("the role");
    assert_eq!(role["body"]["tags"]["tre:workspace"], "ws-alice");
    assert_eq!(
        role["body"]["inlinePolicies"]["study-access"]["Statement"][0]["Action"],
        "s3:GetObject*"
    );
    assert_eq!(
        role["body"]["attachedPolicies"],
        serde_json::json!([policy_arn])
    );
    assert_eq!(role["body"]["project"], "proj-genomics");
}

#[test]
fn budgets_become_budget_entities_that_decide_the_responses() {
    let moto = Moto::start();
    runtime().block_on(async {
        let budgets = aws_sdk_budgets::Client::new(&moto.sdk_config().await);
        let spend = |amount: &str| {
            aws_sdk_budgets::types::Spend::builder()
                .amount(amount)
                .unit("USD")
                .build()
                .expect("spend")
        };
        budgets
            .create_budget()
            .account_id(DEFAULT_ACCOUNT)
            .budget(
                aws_sdk_budgets::types::Budget::builder()
                    .budget_name("tre-genomics")
                    .budget_limit(spend("1000.00"))
                    .time_unit(aws_sdk_budgets::types::TimeUnit::Monthly)
                    .budget_type(aws_sdk_budgets::types::BudgetType::Cost)
                    .calculated_spend(
                        aws_sdk_budgets::types::CalculatedSpend::builder()
                            .actual_spend(spend("820.50"))
                            .forecasted_spend(spend("1150"))
                            .build(),
                    )
                    .build()
                    .expect("budget"),
            )
            .send()
            .await
            .expect("create budget");
    });
    let tre = Tre::new();
    let cfg = project_config(&tre, "[budgets]\nnotify_actual_percent = 80\n");
    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let uid = r#"Tre::Budget::"proj-genomics/tre-genomics""#;
    let budget = entity(&tre, uid).expect("budget");
    assert_eq!(budget["attrs"]["limitCents"], 100_000);
    assert_eq!(budget["attrs"]["actualCents"], 82_050);
    assert_eq!(budget["attrs"]["forecastCents"], 115_000);
    assert_eq!(budget["attrs"]["timeWindow"], "MONTHLY");
    // The collected budget decides: 82% of the limit notifies, and denies nothing yet.
    let decide = |action: &str| {
        tre.run(&[
            "authorize",
            "--principal",
            r#"Tre::Service::"tregov""#,
            "--action",
            action,
            "--resource",
            uid,
        ])
        .status
        .code()
    };
    assert_eq!(decide(r#"Tre::Action::"budgetNotify""#), Some(0));
    assert_eq!(decide(r#"Tre::Action::"budgetDenyNewWorkspaces""#), Some(2));
}

#[test]
fn registered_instances_and_notebooks_become_workspaces_and_backup_plans_are_seen() {
    let moto = Moto::start();
    let instance = runtime().block_on(async {
        let sdk = moto.sdk_config().await;
        moto.create_role("swb-ws-alice", &[]).await;
        let instance = moto
            .run_instance_as_role(
                "swb-ws-alice",
                &[
                    ("tre:workspace", "ws-alice-ec2"),
                    ("tre:owner", "alice"),
                    ("tre:workspace-type", "ec2-linux-approved"),
                    ("backup", "true"),
                ],
            )
            .await;
        // An instance that is not a TRE workspace.
        moto.run_instance(&[]).await;
        let sm = aws_sdk_sagemaker::Client::new(&sdk);
        let smtag = |k: &str, v: &str| {
            aws_sdk_sagemaker::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        };
        sm.create_notebook_instance()
            .notebook_instance_name("bob-notebook")
            .instance_type(aws_sdk_sagemaker::types::InstanceType::MlT2Medium)
            .role_arn("arn:aws:iam::123456789012:role/swb-ws-bob")
            .tags(smtag("tre:workspace", "ws-bob-notebook"))
            .tags(smtag("tre:owner", "bob"))
            .tags(smtag("tre:workspace-type", "sagemaker-notebook"))
            .send()
            .await
            .expect("notebook");
        let backup = aws_sdk_backup::Client::new(&sdk);
        backup
            .create_backup_vault()
            .backup_vault_name("tre-vault")
            .send()
            .await
            .expect("vault");
        backup
            .create_backup_plan()
            .backup_plan(
                aws_sdk_backup::types::BackupPlanInput::builder()
                    .backup_plan_name("tre-workspaces")
                    .rules(
                        aws_sdk_backup::types::BackupRuleInput::builder()
                            .rule_name("daily")
                            .target_backup_vault_name("tre-vault")
                            .schedule_expression("cron(0 5 ? * * *)")
                            .start_window_minutes(60)
                            .completion_window_minutes(600)
                            .lifecycle(
                                aws_sdk_backup::types::Lifecycle::builder()
                                    .move_to_cold_storage_after_days(90)
                                    .delete_after_days(180)
                                    .build(),
                            )
                            .build()
                            .expect("rule"),
                    )
                    .build()
                    .expect("plan"),
            )
            .send()
            .await
            .expect("plan");
        instance
    });
    let tre = Tre::new();
    // As Service Workbench records them: the owners come from here, not from the tags.
    let registry = json!({"workspaces": [
        {"id": "ws-alice-ec2", "project": "proj-genomics", "owner": "alice",
         "workspaceType": "ec2-linux-approved", "kind": "ec2", "instance": instance},
        {"id": "ws-bob-notebook", "project": "proj-genomics", "owner": "bob",
         "workspaceType": "sagemaker-notebook", "kind": "sagemaker", "instance": "bob-notebook"}
    ]});
    std::fs::write(tre.dir.path().join("workspaces.json"), registry.to_string()).expect("registry");
    let cfg = project_config(&tre, "[workspaces]\nregistry = \"workspaces.json\"\n");
    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let ec2 = entity(&tre, r#"Tre::Workspace::"ws-alice-ec2""#).expect("ec2 workspace");
    assert_eq!(ec2["attrs"]["owner"]["__entity"]["id"], "alice");
    assert_eq!(ec2["attrs"]["kind"], "ec2");
    assert_eq!(ec2["attrs"]["status"], "running");
    assert_eq!(ec2["attrs"]["backupOptIn"], true);
    assert_eq!(
        ec2["attrs"]["roleArn"],
        "arn:aws:iam::123456789012:role/swb-ws-alice"
    );
    let nb = entity(&tre, r#"Tre::Workspace::"ws-bob-notebook""#).expect("notebook workspace");
    assert_eq!(nb["attrs"]["kind"], "sagemaker");
    assert_eq!(nb["attrs"]["backupOptIn"], false);
    assert_eq!(
        nb["attrs"]["roleArn"],
        "arn:aws:iam::123456789012:role/swb-ws-bob"
    );

    let instances = observed(&tre, "ec2-instance");
    assert_eq!(instances.len(), 2, "both instances are observed");
    let plan = &observed(&tre, "backup-plan")[0]["body"];
    assert_eq!(plan["rules"][0]["deleteAfterDays"], 180);
    assert_eq!(plan["rules"][0]["coldStorageAfterDays"], 90);
    assert_eq!(
        observed(&tre, "backup-vault")[0]["body"]["name"],
        "tre-vault"
    );
}

//! MLflow tracking and registry against a real `mlflow server`, read back through MLflow's own
//! Python client: params, per-epoch and test metrics, artifacts byte-equal to the run's, the
//! `champion` alias on the promoted version; `models:/` runs in predict and serve (which swaps
//! when the alias moves); a server that is down; secrets never written.

use crate::util::mlflow::MlflowServer;
use crate::util::server::Server;
use crate::util::*;
use std::path::Path;
use std::time::Duration;

const MODEL: &str = "vocml-multilabel-person-chair-dog-sofa";

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

/// What MLflow's Python client reads back: each run by name (params, metrics, tags, the
/// val_macro_f1 steps), and the champion version with the SHA-256 of its downloaded weights.
fn read_back(uri: &str, dl: &Path) -> serde_json::Value {
    let code = format!(
        r#"
import hashlib, json, mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri("{uri}")
c = MlflowClient()
out = {{"runs": {{}}}}
for r in mlflow.search_runs(experiment_names=["vocml"], output_format="list"):
    out["runs"][r.info.run_name] = {{
        "id": r.info.run_id, "status": r.info.status, "params": r.data.params, "metrics": r.data.metrics, "tags": r.data.tags,
        "steps": [m.step for m in c.get_metric_history(r.info.run_id, "val_macro_f1")],
        "artifacts": sorted(a.path for a in c.list_artifacts(r.info.run_id, "run")),
    }}
mv = c.get_model_version_by_alias("{MODEL}", "champion")
p = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="run/model.safetensors", dst_path="{dl}")
out["champion"] = {{"version": mv.version, "run_id": mv.run_id, "sha256": hashlib.sha256(open(p, "rb").read()).hexdigest()}}
print(json.dumps(out))
"#,
        dl = dl.display()
    );
    serde_json::from_str(python_eval(&code).trim().lines().last().unwrap()).unwrap()
}

/// One MLflow server through the whole registry story (long on purpose: its steps depend on
/// each other, and a server per step would cost a minute each).
#[test]
fn runs_are_logged_and_the_champion_alias_drives_predict_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mlflow = MlflowServer::start(&root.join("mlflow"));
    let cache = root.join("cache");
    let with_env = |c: &mut std::process::Command| {
        c.env("VOCML_CACHE_DIR", &cache).env("MLFLOW_TRACKING_TOKEN", "sekrit-token-42");
    };
    let data = prepared(root, 60, 64);
    let runs = root.join("runs");
    let mut train = bin("train");
    train.arg("--data").arg(&data).arg("--runs-dir").arg(&runs).args(["-q", "--epochs", "3", "--patience", "5", "--aug-views", "1"]);
    train.args(["--mlflow", &mlflow.uri]);
    with_env(&mut train);
    let o = run(&mut train);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("(model {MODEL} version 1)")), "{}", stdout(&o));
    let first = only_run(&runs);
    let o = run(bin("evaluate").arg("--data").arg(&data).arg("--runs").arg(&runs).args(["-q", "--mlflow", &mlflow.uri]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("models:/{MODEL}@champion -> version 1")), "{}", stdout(&o));

    let img = root.join("voc/JPEGImages/000002.jpg");
    std::fs::write(root.join("fix.csv"), format!("path,labels\n{},dog;sofa\n", img.display())).unwrap();
    let retrain = || {
        let mut c = bin("retrain");
        c.arg("--runs-dir").arg(&runs).arg("--corrections").arg(root.join("fix.csv"));
        c.args(["-q", "--epochs", "2", "--replicate", "2", "--force", "--mlflow", &mlflow.uri]);
        with_env(&mut c);
        c
    };
    let o = run(&mut retrain());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("models:/{MODEL}@champion -> version 2")), "{}", stdout(&o));
    let best = runs.join("best").canonicalize().unwrap();

    // Read back through MLflow's own client.
    let got = read_back(&mlflow.uri, &root.join("dl"));
    let first_name = first.file_name().unwrap().to_str().unwrap();
    let t = &got["runs"][first_name];
    assert_eq!(t["status"], "FINISHED");
    assert_eq!(t["params"]["options.epochs"], "3");
    assert_eq!(t["params"]["options.model"], "efficientnet_lite0");
    assert_eq!(t["steps"], serde_json::json!([1, 2, 3]), "one val_macro_f1 per epoch");
    assert!(t["metrics"]["test_macro_f1"].is_number() && t["metrics"]["test_ap.person"].is_number(), "{}", t["metrics"]);
    assert_eq!(t["tags"]["vocml.run_dir"], first.canonicalize().unwrap().to_str().unwrap());
    for f in ["run/config.json", "run/model.safetensors", "run/history.csv", "run/classes.json", "run/training_curves.png"] {
        assert!(t["artifacts"].as_array().unwrap().iter().any(|a| a == f), "{f} not in {}", t["artifacts"]);
    }
    let r = &got["runs"][best.file_name().unwrap().to_str().unwrap()];
    assert_eq!(r["tags"]["vocml.parent_mlflow_run"], t["id"], "the retrain names its parent's MLflow run");
    assert_eq!(got["champion"]["version"], "2");
    assert_eq!(got["champion"]["run_id"], r["id"]);
    assert_eq!(got["champion"]["sha256"], sha256(&best.join("model.safetensors")), "downloaded weights equal the run's");
    let cfg = read_json(&best.join("config.json"));
    assert_eq!(cfg["mlflow"]["run_id"], r["id"], "the local run records its MLflow run");
    assert_eq!(cfg["mlflow"]["model_version"], "2");

    // predict with the champion gives the rows of runs/best.
    let photos = root.join("voc/JPEGImages");
    let mut by_alias = bin("predict");
    by_alias.args(["-q", "--run", &format!("models:/{MODEL}@champion"), "--mlflow", &mlflow.uri]).arg(&photos);
    with_env(&mut by_alias);
    let a = run(&mut by_alias);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = run(bin("predict").args(["-q", "--run"]).arg(runs.join("best")).arg(&photos));
    assert_eq!(stdout(&a), stdout(&b));

    // serve follows the alias: a promotion elsewhere is swapped in.
    let server = Server::start(&runs, &["--run", &format!("models:/{MODEL}@champion"), "--mlflow", &mlflow.uri]);
    assert_eq!(server.get("/model").json()["run"], best.file_name().unwrap().to_str().unwrap());
    // Both versions: this server's swap count, and the registry's (the champion is version 2).
    let health = server.get("/health").json();
    assert_eq!((health["version"].as_u64(), health["registry_version"].as_str()), (Some(1), Some("2")), "{health}");
    assert_eq!(server.get("/model").json()["registered_model"], MODEL);
    let o = run(&mut retrain());
    assert!(stdout(&o).contains(&format!("models:/{MODEL}@champion -> version 3")), "{}", stdout(&o));
    let newest = runs.join("best").canonicalize().unwrap();
    server.wait_until(Duration::from_secs(60), |s| s.get("/model").json()["run"] == newest.file_name().unwrap().to_str().unwrap());
    assert_eq!(server.get("/ready").json()["registry_version"], "3");

    // Secrets are never printed nor written to a run.
    for f in std::fs::read_dir(&newest).unwrap().flatten() {
        let bytes = std::fs::read(f.path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("sekrit-token-42"), "{} holds the token", f.path().display());
    }
    assert!(!stderr(&o).contains("sekrit") && !stdout(&o).contains("sekrit"));
}

#[test]
fn a_server_that_is_down_warns_and_keeps_the_run_unless_required() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = prepared(root, 40, 64);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{port}");
    let train = |runs: &str, extra: &[&str]| {
        let mut c = bin("train");
        c.arg("--data").arg(&data).arg("--runs-dir").arg(root.join(runs)).args(["-q", "--epochs", "1", "--mlflow", &down]).args(extra);
        run(&mut c)
    };
    let o = train("runs", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: MLflow") && stderr(&o).contains("the local run is complete"), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("warning").count(), 1, "one warning: {}", stderr(&o));
    vocml_core::infer::loaded::LoadedModel::load(&only_run(&root.join("runs")), tch::Device::Cpu).unwrap();
    let o = train("runs2", &["--mlflow-required"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--mlflow-required"), "{}", stderr(&o));
    vocml_core::infer::loaded::LoadedModel::load(&only_run(&root.join("runs2")), tch::Device::Cpu).unwrap();
}

//! `unitforge doctor`: what this Docker engine supports, the image state, and a probe that
//! starts one hardened sandbox container and reports, from inside it, which protections hold.

use std::collections::BTreeMap;

use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use serde::Serialize;

use crate::docker::{container_config, ContainerLimits};
use crate::image::{image_id, sandbox_image_tag};

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub engine_version: Option<String>,
    pub engine_api: Option<String>,
    pub cgroup_version: Option<String>,
    pub storage_driver: Option<String>,
    pub security_options: Vec<String>,
    pub image_tag: String,
    pub image_id: Option<String>,
    /// Each protection, as observed inside a probe container: `true` when it holds.
    pub probe: BTreeMap<String, bool>,
    pub probe_error: Option<String>,
}

/// Runs inside the probe container (as its entrypoint) and prints one JSON object.
const PROBE_SCRIPT: &str = r#"
import json, os, socket
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return line.split(':', 1)[1].strip()
def fails(action):
    try:
        action()
        return False
    except Exception:
        return True
def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return ''
interfaces = [name for _, name in socket.if_nameindex()]
result = {
    'non_root_user': os.getuid() != 0,
    'no_capabilities': int(status('CapEff'), 16) == 0,
    'no_new_privileges': status('NoNewPrivs') == '1',
    'seccomp_filter': status('Seccomp') == '2',
    'no_network': interfaces in ([], ['lo']),
    'read_only_root': fails(lambda: open('/probe', 'w')),
    'work_dir_writable': not fails(lambda: open('/work/probe', 'w').close()),
    'pids_limited': read('/sys/fs/cgroup/pids.max') not in ('', 'max') or read('/sys/fs/cgroup/pids/pids.max') not in ('', 'max'),
    'memory_limited': read('/sys/fs/cgroup/memory.max') not in ('', 'max') or read('/sys/fs/cgroup/memory/memory.limit_in_bytes') not in ('', '9223372036854771712'),
    'init_reaps_orphans': read('/proc/1/comm') in ('docker-init', 'tini'),
}
print(json.dumps(result))
"#;

pub async fn diagnose(docker: &Docker, image: Option<&str>) -> DoctorReport {
    let tag = image.map_or_else(sandbox_image_tag, str::to_string);
    let mut report = DoctorReport {
        engine_version: None,
        engine_api: None,
        cgroup_version: None,
        storage_driver: None,
        security_options: Vec::new(),
        image_tag: tag.clone(),
        image_id: None,
        probe: BTreeMap::new(),
        probe_error: None,
    };
    if let Ok(version) = docker.version().await {
        report.engine_version = version.version;
        report.engine_api = version.api_version;
    }
    if let Ok(info) = docker.info().await {
        report.cgroup_version = info
            .cgroup_version
            .map(|v| format!("{v:?}").trim_start_matches('_').to_string());
        report.storage_driver = info.driver;
        report.security_options = info.security_options.unwrap_or_default();
    }
    report.image_id = image_id(docker, &tag).await.ok().flatten();
    if report.image_id.is_none() {
        report.probe_error = Some(format!(
            "image {tag} is missing: `unitforge image build` builds it"
        ));
        return report;
    }
    match probe(docker, &tag).await {
        Ok(probe) => report.probe = probe,
        Err(err) => report.probe_error = Some(err),
    }
    report
}

async fn probe(docker: &Docker, tag: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut config = container_config(tag, &ContainerLimits::default(), "doctor");
    config.entrypoint = Some(vec![
        "/usr/bin/python3".into(),
        "-I".into(),
        "-c".into(),
        PROBE_SCRIPT.into(),
    ]);
    config.cmd = Some(vec![]);
    config.open_stdin = Some(false);
    let name = format!("unitforge-doctor-{}", std::process::id());
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            config,
        )
        .await
        .map_err(|e| format!("creating the probe container: {e}"))?;
    let result = async {
        let attach = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let mut attached = docker
            .attach_container(&created.id, Some(attach))
            .await
            .map_err(|e| e.to_string())?;
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| format!("starting the probe: {e}"))?;
        let mut output = String::new();
        while let Some(Ok(frame)) = attached.output.next().await {
            output.push_str(&frame.to_string());
        }
        let _ = docker
            .wait_container(
                &created.id,
                Some(WaitContainerOptionsBuilder::default().build()),
            )
            .next()
            .await;
        serde_json::from_str(output.trim()).map_err(|e| format!("probe output {output:?}: {e}"))
    }
    .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    result
}

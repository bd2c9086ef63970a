//! The sandbox image: its tag, whether the engine has it, and building it offline.
//!
//! The tag is derived from everything that goes into the image (protocol version, runner,
//! pinned requirements, build script), so a changed runner can never run in a stale image and
//! two builds of the same sources share one tag. `images/sandbox/build-offline.sh` builds it
//! without a registry; `images/sandbox/Dockerfile` is the same image for users who have one.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::Docker;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::local::RUNNER_SOURCE;
use crate::protocol::PROTOCOL_VERSION;

pub const IMAGE_REPOSITORY: &str = "unitforge-sandbox";
pub const BUILD_SCRIPT: &str = include_str!("../../images/sandbox/build-offline.sh");
pub const RUNNER_REQUIREMENTS: &str = include_str!("../runner/requirements.txt");

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot reach the Docker engine: {0}")]
    Engine(#[from] bollard::errors::Error),
    #[error("the sandbox image {tag} is missing and cannot be built here: {reason}")]
    CannotBuild { tag: String, reason: String },
    #[error("building the sandbox image {tag} failed ({status}); last output: {tail}")]
    BuildFailed {
        tag: String,
        status: String,
        tail: String,
    },
}

/// `unitforge-sandbox:p<protocol>-<12 hex digits of the inputs' hash>`.
pub fn sandbox_image_tag() -> String {
    let mut hasher = Sha256::new();
    for part in [RUNNER_SOURCE, RUNNER_REQUIREMENTS, BUILD_SCRIPT] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("{IMAGE_REPOSITORY}:p{PROTOCOL_VERSION}-{}", &digest[..12])
}

/// The engine's id for `tag`, or `None` if it has no such image.
pub async fn image_id(docker: &Docker, tag: &str) -> Result<Option<String>, ImageError> {
    match docker.inspect_image(tag).await {
        Ok(image) => Ok(image.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Where the build script lives: next to the sources (a checkout), found from the current
/// directory upwards.
fn find_build_script() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|dir| dir.join("images/sandbox/build-offline.sh"))
        .find(|path| path.is_file())
}

/// Make sure the engine has the sandbox image, building it if it is missing. `progress` gets
/// each line the build prints. Returns the image id.
pub async fn ensure_image(
    docker: &Docker,
    tag: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String, ImageError> {
    if let Some(id) = image_id(docker, tag).await? {
        return Ok(id);
    }
    let script = find_build_script().ok_or_else(|| ImageError::CannotBuild {
        tag: tag.into(),
        reason: "images/sandbox/build-offline.sh was not found above the current directory; run from a checkout, or build with images/sandbox/Dockerfile".into(),
    })?;
    progress(&format!(
        "the sandbox image {tag} is missing; building it with {}",
        script.display()
    ));
    build_image(&script, tag, progress).await?;
    image_id(docker, tag)
        .await?
        .ok_or_else(|| ImageError::BuildFailed {
            tag: tag.into(),
            status: "the build finished but the engine has no such image".into(),
            tail: String::new(),
        })
}

async fn build_image(
    script: &Path,
    tag: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), ImageError> {
    let mut child = tokio::process::Command::new("bash")
        .arg(script)
        .arg(tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImageError::CannotBuild {
            tag: tag.into(),
            reason: e.to_string(),
        })?;
    let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut tail = Vec::new();
    let mut streams =
        futures::stream::select(tokio_stream_lines(stdout), tokio_stream_lines(stderr));
    use futures::StreamExt;
    while let Some(line) = streams.next().await {
        progress(&line);
        tail.push(line);
        if tail.len() > 5 {
            tail.remove(0);
        }
    }
    let status = child.wait().await.map_err(|e| ImageError::CannotBuild {
        tag: tag.into(),
        reason: e.to_string(),
    })?;
    if !status.success() {
        return Err(ImageError::BuildFailed {
            tag: tag.into(),
            status: status.to_string(),
            tail: tail.join(" | "),
        });
    }
    Ok(())
}

fn tokio_stream_lines<R: tokio::io::AsyncBufRead + Unpin + Send + 'static>(
    lines: tokio::io::Lines<R>,
) -> futures::stream::BoxStream<'static, String> {
    Box::pin(futures::stream::unfold(lines, |mut lines| async move {
        match lines.next_line().await {
            Ok(Some(line)) => Some((line, lines)),
            _ => None,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names_protocol_and_content() {
        let tag = sandbox_image_tag();
        assert!(
            tag.starts_with(&format!("unitforge-sandbox:p{PROTOCOL_VERSION}-")),
            "{tag}"
        );
        assert_eq!(tag.len(), "unitforge-sandbox:p1-".len() + 12);
        assert_eq!(tag, sandbox_image_tag());
    }
}

//! File staging on the efile service: `submit --upload` (mkdir, multipart upload, chunked
//! `burst` + `merge` for large files) and the listing `fetch` walks to download a job's
//! working directory.

use super::api::{Api, code_string, decode, join, transient};
use crate::config::Secret;
use crate::error::{Error, ErrorKind, Result};
use crate::http::Idempotency;
use serde_json::Value;
use std::path::{Path, PathBuf};
use url::Url;

/// Files up to this size go in one `upload`; larger ones in chunks of this size.
pub const DEFAULT_CHUNK: u64 = 8 * 1024 * 1024;

/// "File or directory already exists": success for `mkdir`.
const EXISTS: &str = "911021";

/// One `--upload LOCAL[:REMOTE]` as given.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadArg {
    /// The local file or directory.
    pub local: PathBuf,
    /// Where it goes: absolute, or relative to the working directory; `None` = its own name.
    pub remote: Option<String>,
}

impl UploadArg {
    /// Parses `LOCAL[:REMOTE]`. A local path that itself contains `:` is taken whole when it
    /// exists.
    pub fn parse(raw: &str) -> Result<Self> {
        let t = raw.trim();
        let (local, remote) = match t.split_once(':') {
            Some(_) if Path::new(t).exists() => (t, None),
            Some((l, r)) => (l, Some(r.trim()).filter(|r| !r.is_empty())),
            None => (t, None),
        };
        if local.is_empty() {
            return Err(Error::usage(format!(
                "--upload '{raw}': give a local file or directory, as LOCAL[:REMOTE]"
            )));
        }
        if let Some(r) = remote {
            if r.split('/').any(|c| c == "..") {
                return Err(Error::usage(format!(
                    "--upload '{raw}': REMOTE must not contain '..'"
                )));
            }
        }
        let local = PathBuf::from(local);
        let meta = std::fs::metadata(&local).map_err(|e| {
            Error::usage(format!(
                "--upload: cannot read local '{}': {e}",
                local.display()
            ))
        })?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(Error::usage(format!(
                "--upload: '{}' is neither a file nor a directory",
                local.display()
            )));
        }
        Ok(UploadArg {
            local,
            remote: remote.map(str::to_string),
        })
    }
}

/// Everything one `--upload` set means on the remote side: directories to create (parents
/// first) and files to send.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Remote directories, parents before children.
    pub dirs: Vec<String>,
    /// (local file, remote directory, remote file name, size).
    pub files: Vec<(PathBuf, String, String, u64)>,
}

/// `base` + `rel` with `/`, `rel` absolute wins.
fn remote_join(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        return rel.trim_end_matches('/').to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches("./").trim_end_matches('/')
    )
}

fn split_remote(path: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/".to_string(), name.to_string()),
        Some((dir, name)) => (dir.to_string(), name.to_string()),
        None => (String::new(), path.to_string()),
    }
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::usage(format!(
                "--upload: '{}' has no usable file name (not UTF-8?)",
                p.display()
            ))
        })
}

/// Expands the uploads into directories and files under `workdir`. A file's REMOTE ending in
/// `/` is a directory to put it in; otherwise REMOTE names the file. A directory's REMOTE is
/// the directory that receives its content.
pub fn plan(uploads: &[UploadArg], workdir: &str) -> Result<Plan> {
    let mut plan = Plan {
        dirs: vec![workdir.trim_end_matches('/').to_string()],
        ..Plan::default()
    };
    for u in uploads {
        let meta = std::fs::metadata(&u.local)
            .map_err(|e| Error::usage(format!("--upload '{}': {e}", u.local.display())))?;
        if meta.is_dir() {
            let target = match &u.remote {
                Some(r) => remote_join(workdir, r),
                None => remote_join(workdir, &file_name(&u.local)?),
            };
            walk(&u.local, &target, &mut plan)?;
        } else {
            let (dir, name) = match &u.remote {
                Some(r) if r.ends_with('/') => (remote_join(workdir, r), file_name(&u.local)?),
                Some(r) => split_remote(&remote_join(workdir, r)),
                None => (
                    workdir.trim_end_matches('/').to_string(),
                    file_name(&u.local)?,
                ),
            };
            push_dir(&mut plan, &dir);
            plan.files.push((u.local.clone(), dir, name, meta.len()));
        }
    }
    Ok(plan)
}

fn push_dir(plan: &mut Plan, dir: &str) {
    if !plan.dirs.iter().any(|d| d == dir) {
        plan.dirs.push(dir.to_string());
    }
}

fn walk(local: &Path, remote: &str, plan: &mut Plan) -> Result<()> {
    push_dir(plan, remote);
    let mut entries: Vec<_> = std::fs::read_dir(local)
        .map_err(|e| Error::usage(format!("--upload '{}': {e}", local.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::usage(format!("--upload '{}': {e}", local.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = file_name(&path)?;
        // Symlinked files are followed (their content is the input); symlinked directories
        // are not, so a link back up the tree cannot make the walk endless.
        let meta = std::fs::metadata(&path)
            .map_err(|e| Error::usage(format!("--upload '{}': {e}", path.display())))?;
        let link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if meta.is_dir() && link {
            tracing::warn!(
                "--upload: skipping {} (a symlink to a directory)",
                path.display()
            );
        } else if meta.is_dir() {
            walk(&path, &format!("{remote}/{name}"), plan)?;
        } else if meta.is_file() {
            plan.files
                .push((path, remote.to_string(), name, meta.len()));
        }
    }
    Ok(())
}

/// Names the file an upload failure is about, keeping the error's kind (so exit 4 for a
/// refused permission, 7 for trouble on the platform).
fn about(e: Error, what: &str) -> Error {
    let mut e = e;
    e.message = format!("uploading {what}: {}", e.message);
    if e.kind == ErrorKind::Usage {
        // The platform refusing a file is not a mistake in the command line.
        e.kind = ErrorKind::Platform;
    }
    e
}

/// Requests of the efile service.
#[derive(Debug)]
pub struct Efile<'a> {
    /// Raw requests.
    pub api: &'a Api,
    /// `{efileUrl}` ending in `/efile`.
    pub base: Url,
    /// The regional token.
    pub token: &'a Secret,
}

impl Efile<'_> {
    fn url(&self, path: &str) -> Result<Url> {
        join(&self.base, path)
    }

    /// `mkdir -p`; an existing directory is fine.
    pub async fn mkdir(&self, dir: &str) -> Result<()> {
        let url = self.url("/openapi/v2/file/mkdir")?;
        let resp = self
            .api
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                c.post(url.clone())
                    .header("token", self.token.expose())
                    .query(&[("path", dir), ("createParents", "true")])
            })
            .await?;
        match decode(&resp) {
            Ok(_) => Ok(()),
            Err(e) if e.code.as_deref() == Some(EXISTS) => Ok(()),
            Err(e) => Err(about(e, &format!("(creating directory {dir})"))),
        }
    }

    /// Uploads one file (in chunks when it is larger than `chunk`).
    pub async fn put(
        &self,
        local: &Path,
        dir: &str,
        name: &str,
        size: u64,
        chunk: u64,
    ) -> Result<()> {
        let what = format!("{} to {dir}/{name}", local.display());
        let r = if size > chunk {
            self.put_chunked(local, dir, name, size, chunk).await
        } else {
            let bytes = tokio::fs::read(local)
                .await
                .map_err(|e| Error::io(local.display(), e))?;
            self.put_whole(bytes::Bytes::from(bytes), dir, name).await
        };
        r.map_err(|e| about(e, &what))
    }

    async fn put_whole(&self, bytes: bytes::Bytes, dir: &str, name: &str) -> Result<()> {
        let url = self.url("/openapi/v2/file/upload")?;
        let resp = self
            .api
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                let form = reqwest::multipart::Form::new()
                    .text("path", dir.to_string())
                    .text("cover", "cover")
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string()),
                    );
                c.post(url.clone())
                    .header("token", self.token.expose())
                    .multipart(form)
            })
            .await?;
        decode(&resp).map(|_| ())
    }

    async fn put_chunked(
        &self,
        local: &Path,
        dir: &str,
        name: &str,
        size: u64,
        chunk: u64,
    ) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let url = self.url("/openapi/v2/file/burst")?;
        let total = size.div_ceil(chunk);
        let identifier = format!("{size}-{}", name.replace('.', ""));
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(local.display(), e))?;
        for number in 1..=total {
            let mut buf = Vec::with_capacity(chunk.min(size) as usize);
            (&mut file)
                .take(chunk)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| Error::io(local.display(), e))?;
            let bytes = bytes::Bytes::from(buf);
            let fields = [
                ("chunkNumber", number.to_string()),
                ("totalChunks", total.to_string()),
                ("chunkSize", chunk.to_string()),
                ("currentChunkSize", bytes.len().to_string()),
                ("totalSize", size.to_string()),
                ("identifier", identifier.clone()),
                ("filename", name.to_string()),
                ("relativePath", name.to_string()),
                ("path", dir.to_string()),
                ("cover", "cover".to_string()),
            ];
            let resp = self
                .api
                .http
                .send(Idempotency::Idempotent, transient, |c| {
                    let mut form = reqwest::multipart::Form::new();
                    for (k, v) in &fields {
                        form = form.text(*k, v.clone());
                    }
                    form = form.part(
                        "file",
                        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string()),
                    );
                    c.post(url.clone())
                        .header("token", self.token.expose())
                        .multipart(form)
                })
                .await?;
            decode(&resp).map_err(|mut e| {
                e.message = format!("chunk {number}/{total}: {}", e.message);
                e
            })?;
        }
        let merge = self.url("/openapi/v2/file/merge")?;
        let form = [
            ("cover", "cover".to_string()),
            ("filename", name.to_string()),
            ("path", dir.to_string()),
            ("relativePath", name.to_string()),
            ("identifier", identifier),
        ];
        let resp = self
            .api
            .http
            .send(Idempotency::NotIdempotent, transient, |c| {
                c.post(merge.clone())
                    .header("token", self.token.expose())
                    .form(&form)
            })
            .await?;
        decode(&resp).map(|_| ())
    }

    /// The entries of a remote directory: (name, is directory).
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        let url = self.url("/openapi/v2/file/list")?;
        let mut out = Vec::new();
        let limit = 500usize;
        let mut start = 0usize;
        loop {
            let data = self
                .api
                .get(
                    &url,
                    self.token,
                    &[
                        ("path", dir.to_string()),
                        ("start", start.to_string()),
                        ("limit", limit.to_string()),
                        ("order", "asc".to_string()),
                        ("orderBy", "name".to_string()),
                    ],
                )
                .await?;
            let items = data
                .get("fileList")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = data
                .get("total")
                .map(code_string)
                .and_then(|t| t.parse::<usize>().ok());
            let n = items.len();
            for i in items {
                let Some(name) = i.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                    continue;
                }
                let is_dir = ["isDirectory", "isDir", "directory"]
                    .iter()
                    .find_map(|k| i.get(*k))
                    .map(|v| v.as_bool().unwrap_or_else(|| code_string(v) == "true"))
                    .unwrap_or_else(|| {
                        i.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| t.eq_ignore_ascii_case("directory"))
                    });
                out.push((name.to_string(), is_dir));
            }
            start += n;
            if n == 0 || n < limit || total.is_some_and(|t| start >= t) {
                return Ok(out);
            }
        }
    }

    /// Every file under `dir`, as paths relative to it (depth-first, sorted).
    pub async fn walk(&self, dir: &str) -> Result<Vec<String>> {
        let mut files = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let abs = if rel.is_empty() {
                dir.to_string()
            } else {
                format!("{}/{rel}", dir.trim_end_matches('/'))
            };
            for (name, is_dir) in self.list(&abs).await? {
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if is_dir {
                    pending.push(child);
                } else {
                    files.push(child);
                }
            }
        }
        files.sort();
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_map_to_remote_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run.sh");
        std::fs::write(&run, "echo hi").unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.txt"), "a").unwrap();
        std::fs::write(data.join("sub/b.txt"), "bb").unwrap();
        let arg = |s: String| UploadArg::parse(&s).unwrap();
        let uploads = vec![
            arg(run.display().to_string()),
            arg(format!("{}:bin/start.sh", run.display())),
            arg(format!("{}:/public/home/u/shared/", run.display())),
            arg(format!("{}:inputs", data.display())),
        ];
        let p = plan(&uploads, "/public/home/u/jobctl/k1").unwrap();
        let w = "/public/home/u/jobctl/k1";
        assert_eq!(
            p.files
                .iter()
                .map(|(_, d, n, s)| (d.as_str(), n.as_str(), *s))
                .collect::<Vec<_>>(),
            vec![
                (w, "run.sh", 7),
                ("/public/home/u/jobctl/k1/bin", "start.sh", 7),
                ("/public/home/u/shared", "run.sh", 7),
                ("/public/home/u/jobctl/k1/inputs", "a.txt", 1),
                ("/public/home/u/jobctl/k1/inputs/sub", "b.txt", 2),
            ]
        );
        assert_eq!(p.dirs[0], w);
        assert!(
            p.dirs
                .contains(&"/public/home/u/jobctl/k1/inputs/sub".to_string())
        );
        let e = UploadArg::parse("/no/such/file").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("/no/such/file"));
        assert!(UploadArg::parse(&format!("{}:../x", run.display())).is_err());
    }
}

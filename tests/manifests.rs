//! The shipped Kubernetes manifests (`manifests/`), checked offline, because a cluster
//! is the wrong place to find a typo: yamllint on every YAML file; kubernetes-validate
//! `--strict` on every object, as written and as each kustomization builds it; the
//! kustomizations name files that exist and their patches apply; sidemount's own parser
//! reads the ConfigMaps; every sidecar serves a configured VCS on the socket the daemon
//! looks for; every `sidemount` command line in them is one the binary accepts.
//! yamllint and kubernetes-validate come from PyPI; when they are missing the tests
//! fail and say how to install them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use sidemount::api::fstype::FsType;
use sidemount::daemon::config::Config;
use sidemount::vcs::Provider;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");
const SIDEMOUNT: &str = env!("CARGO_BIN_EXE_sidemount");
/// The newest Kubernetes that kubernetes-validate 1.37.0 has schemas for.
const KUBERNETES_VERSION: &str = "1.37.0";
const INSTALL: &str = "pip install yamllint kubernetes-validate";
/// Where the daemon's socket, and so the agents' (`agents/NAME.sock`), live.
const DAEMON_SOCKET: &str = "/run/sidemount/sidemount.sock";

/// Every file under manifests/, sorted.
fn files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => walk(&path, out),
                false => out.push(path),
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(MANIFESTS), &mut out);
    out.sort();
    out
}

fn yaml_files() -> Vec<PathBuf> {
    let is_yaml = |p: &PathBuf| {
        let name = p.file_name().unwrap().to_str().unwrap();
        name.ends_with(".yaml") || name.ends_with(".yml") || name == ".yamllint"
    };
    files().into_iter().filter(is_yaml).collect()
}

fn rel(path: &Path) -> String {
    path.strip_prefix(MANIFESTS).unwrap().display().to_string()
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(path)))
}

fn is_kustomize(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("kustomize.config.k8s.io/"))
}

/// Runs a tool from PyPI; its absence fails the test with the install command.
fn tool(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is missing: {INSTALL} (hack/test.sh installs them)")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn id(doc: &Value) -> String {
    format!("{}/{}", doc["kind"], doc["metadata"]["name"]).replace('"', "")
}

// ---- kustomize, as far as these manifests use it -------------------------------------

/// The objects `kustomize build DIR` makes, for the features the shipped kustomizations
/// use: resources (files and directories), namespace, labels (includeSelectors),
/// strategic-merge patches of maps, and RFC 6902 patches with a target. Any other key
/// fails, so a kustomization cannot outgrow what this checks.
fn build(dir: &Path) -> Vec<Value> {
    let k = load(&dir.join("kustomization.yaml"));
    let origin = rel(&dir.join("kustomization.yaml"));
    let known = [
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "patches",
    ];
    for key in k.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "{origin}: tests/manifests.rs does not build `{key}` yet"
        );
    }
    assert_eq!(k["kind"], "Kustomization", "{origin}");
    let mut objects = Vec::new();
    for r in k["resources"].as_array().unwrap() {
        let path = dir.join(r.as_str().unwrap());
        assert!(path.exists(), "{origin}: resource {r} does not exist");
        match path.is_dir() {
            true => objects.extend(build(&path)),
            false => objects.push(load(&path)),
        }
    }
    for p in k["patches"].as_array().into_iter().flatten() {
        let path = dir.join(p["path"].as_str().expect("patches are files"));
        assert!(
            path.is_file(),
            "{origin}: patch {} does not exist",
            p["path"]
        );
        let patch = load(&path);
        let origin = rel(&path);
        match patch.as_array() {
            Some(ops) => {
                let t = &p["target"];
                let targets: Vec<&mut Value> = objects
                    .iter_mut()
                    .filter(|o| o["kind"] == t["kind"] && o["metadata"]["name"] == t["name"])
                    .collect();
                assert_eq!(
                    targets.len(),
                    1,
                    "{origin}: target {t} must match one object"
                );
                for target in targets {
                    json_patch(target, ops, &origin);
                }
            }
            None => {
                let target = objects
                    .iter_mut()
                    .find(|o| id(o) == id(&patch))
                    .unwrap_or_else(|| panic!("{origin}: no {} to patch", id(&patch)));
                merge(target, &patch);
            }
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        for o in objects.iter_mut().filter(|o| o["kind"] != "Namespace") {
            o["metadata"]["namespace"] = json!(ns);
        }
    }
    for l in k["labels"].as_array().into_iter().flatten() {
        for o in &mut objects {
            let mut places = vec!["/metadata/labels"];
            if l["includeSelectors"] == true && o["spec"]["selector"].is_object() {
                places.push("/spec/selector/matchLabels");
                places.push("/spec/template/metadata/labels");
            }
            for place in places {
                merge_at(o, place, &l["pairs"]);
            }
        }
    }
    objects
}

/// Strategic merge for maps (lists are replaced): enough for a ConfigMap's data.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = patch.clone(),
    }
}

fn merge_at(doc: &mut Value, pointer: &str, patch: &Value) {
    let mut at = doc;
    for key in pointer.split('/').skip(1) {
        at = &mut at[key];
    }
    merge(at, patch);
}

/// Applies RFC 6902 operations (add, remove, replace, test); each failure names the step.
fn json_patch(doc: &mut Value, ops: &[Value], origin: &str) {
    for (i, op) in ops.iter().enumerate() {
        let path = op["path"].as_str().unwrap();
        let step = format!("{origin}: step {i} ({} {path})", op["op"]);
        let (parent, last) = path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        match op["op"].as_str().unwrap() {
            "test" => assert_eq!(doc.pointer(path), Some(&op["value"]), "{step} fails"),
            "replace" => {
                let at = doc.pointer_mut(path);
                *at.unwrap_or_else(|| panic!("{step}: nothing there")) = op["value"].clone();
            }
            "add" | "remove" => {
                let at = doc.pointer_mut(parent);
                let at = at.unwrap_or_else(|| panic!("{step}: no parent"));
                let adding = op["op"] == "add";
                match at {
                    Value::Array(list) if adding && last == "-" => list.push(op["value"].clone()),
                    Value::Array(list) => {
                        let n: usize = last.parse().unwrap_or_else(|_| panic!("{step}: index"));
                        let room = list.len() + usize::from(adding);
                        assert!(n < room, "{step}: out of range");
                        match adding {
                            true => list.insert(n, op["value"].clone()),
                            false => drop(list.remove(n)),
                        }
                    }
                    Value::Object(map) if adding => drop(map.insert(last, op["value"].clone())),
                    Value::Object(map) => {
                        assert!(map.remove(&last).is_some(), "{step}: nothing there")
                    }
                    _ => panic!("{step}: parent is not a list or a map"),
                }
            }
            other => panic!("{step}: op {other} is not built here"),
        }
    }
}

// ---- what the objects say --------------------------------------------------------------

/// Every kustomization under manifests/ (`.`, `base`, then the examples) and the
/// objects it builds.
fn builds() -> Vec<(String, Vec<Value>)> {
    let mut builds: Vec<(String, Vec<Value>)> = files()
        .iter()
        .filter(|p| p.file_name().unwrap() == "kustomization.yaml")
        .map(|p| {
            let dir = p.parent().unwrap();
            let name = rel(dir);
            (if name.is_empty() { ".".into() } else { name }, build(dir))
        })
        .collect();
    builds.sort_by(|a, b| a.0.cmp(&b.0));
    builds
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// The configuration the daemon reads from a ConfigMap object, by sidemount's parser.
fn config_of(configmap: &Value, origin: &str) -> Config {
    let text = serde_yaml_ng::to_string(configmap).unwrap();
    Config::parse(&text, origin).unwrap_or_else(|e| panic!("{e}"))
}

fn strings(v: &Value) -> Vec<String> {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The value after `flag` in argv (`--flag VALUE` or `--flag=VALUE`).
fn flag(argv: &[String], flag: &str) -> Option<String> {
    let inline = format!("{flag}=");
    argv.iter().enumerate().find_map(|(i, a)| match a {
        a if a == flag => argv.get(i + 1).cloned(),
        a => a.strip_prefix(&inline).map(str::to_owned),
    })
}

fn pod(daemonset: &Value) -> &Value {
    &daemonset["spec"]["template"]["spec"]
}

/// Init containers with `restartPolicy: Always`: native sidecars.
fn sidecars(daemonset: &Value) -> Vec<&Value> {
    let init = pod(daemonset)["initContainers"].as_array().unwrap();
    init.iter()
        .filter(|c| c["restartPolicy"] == "Always")
        .collect()
}

fn daemon(daemonset: &Value) -> &Value {
    let containers = pod(daemonset)["containers"].as_array().unwrap();
    let d = containers.iter().find(|c| c["name"] == "sidemount");
    d.expect("a container named sidemount")
}

/// The volume mounted at `path` in `container`, and the mount.
fn mount_at<'a>(daemonset: &'a Value, container: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let mounts = container["volumeMounts"].as_array().unwrap();
    let m = mounts.iter().find(|m| m["mountPath"] == path);
    let m = m.unwrap_or_else(|| panic!("{}: nothing at {path}", container["name"]));
    let volumes = pod(daemonset)["volumes"].as_array().unwrap();
    let v = volumes.iter().find(|v| v["name"] == m["name"]);
    (v.unwrap_or_else(|| panic!("no volume {}", m["name"])), m)
}

/// Every argv the pod runs: commands, daemon args (its image's entrypoint is
/// sidemount) and exec probes.
fn command_lines(daemonset: &Value) -> Vec<Vec<String>> {
    let p = pod(daemonset);
    let containers = p["initContainers"].as_array().into_iter().flatten();
    let mut lines = Vec::new();
    for c in containers.chain(p["containers"].as_array().unwrap()) {
        let mut argv = strings(&c["command"]);
        if argv.is_empty()
            && c["image"]
                .as_str()
                .unwrap()
                .starts_with("sidemount/sidemount:")
        {
            argv.push("/usr/local/bin/sidemount".into());
        }
        argv.extend(strings(&c["args"]));
        lines.push(argv);
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            if c[probe].is_object() {
                lines.push(strings(&c[probe]["exec"]["command"]));
            }
        }
    }
    lines
}

// ---- the tests -------------------------------------------------------------------------

#[test]
fn every_file_starts_with_a_comment_saying_what_it_is() {
    for path in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# ") && text.lines().next().unwrap().len() > 20,
            "{}: the first line must be a comment saying what the file is",
            rel(&path)
        );
    }
}

#[test]
fn yaml_files_pass_yamllint() {
    let files = yaml_files();
    assert!(files.len() >= 10, "only {} YAML files found", files.len());
    let config = format!("{MANIFESTS}/.yamllint");
    let mut args = vec!["-s", "-f", "parsable", "-c", &config];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    let out = tool("yamllint", &args);
    assert!(out.status.success(), "yamllint:\n{}", text(&out));
}

/// Each object as written, and each as a kustomization builds it (one file each, named
/// for the kustomization and the object, so a failure says which).
#[test]
fn objects_pass_kubernetes_validate_strict() {
    let scratch = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for path in yaml_files() {
        let doc = load(&path);
        if doc["kind"].is_string() && doc["apiVersion"].is_string() && !is_kustomize(&doc) {
            files.push(path);
        }
    }
    let written = files.len();
    for (dir, objects) in builds() {
        for o in objects {
            let name = format!("built {dir} {}.yaml", id(&o)).replace('/', "_");
            let path = scratch.path().join(name);
            std::fs::write(&path, serde_yaml_ng::to_string(&o).unwrap()).unwrap();
            files.push(path);
        }
    }
    assert!(written >= 5 && files.len() >= written + 12, "{files:?}");
    let mut args = vec!["--strict", "-k", KUBERNETES_VERSION];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    let out = tool("kubernetes-validate", &args);
    let report = text(&out);
    assert!(out.status.success(), "kubernetes-validate:\n{report}");
    // An unknown kind or apiVersion is only a warning: every file must have passed.
    let passed = report
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed for "));
    assert_eq!(
        passed.count(),
        files.len(),
        "kubernetes-validate:\n{report}"
    );
}

#[test]
fn kustomizations_build_what_the_manifests_promise() {
    let builds = builds();
    let names: Vec<&str> = builds.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, [".", "base", "examples/docker-provider"]);
    for (dir, objects) in &builds {
        let ids: BTreeSet<String> = objects.iter().map(id).collect();
        let want = [
            "ConfigMap/volume-client",
            "DaemonSet/sidemount",
            "Namespace/sidemount",
            "ServiceAccount/sidemount",
        ];
        assert_eq!(ids, want.map(String::from).into(), "{dir}");
        for o in objects {
            let labels = &o["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/name"],
                "sidemount",
                "{dir}: {}",
                id(o)
            );
            if o["kind"] != "Namespace" {
                assert_eq!(o["metadata"]["namespace"], "sidemount", "{dir}: {}", id(o));
            }
        }
        let ds = find(objects, "DaemonSet", "sidemount");
        let selector = &ds["spec"]["selector"]["matchLabels"];
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(&ds["spec"]["template"]["metadata"]["labels"][k], v, "{dir}");
        }
        let p = pod(ds);
        assert_eq!(p["hostPID"], true, "{dir}");
        assert_eq!(p["priorityClassName"], "system-node-critical", "{dir}");
        assert_eq!(p["tolerations"], json!([{"operator": "Exists"}]), "{dir}");
        let strategy = &ds["spec"]["updateStrategy"];
        assert_eq!(strategy["type"], "RollingUpdate", "{dir}");
        // Two pods on a node would fight over the sockets.
        assert_eq!(strategy["rollingUpdate"]["maxSurge"], 0, "{dir}");
    }
    // The base as written needs no kustomize to be complete.
    let (_, base) = &builds[1];
    for o in base {
        let file = format!("base/{}.yaml", o["kind"].as_str().unwrap().to_lowercase());
        assert_eq!(&load(&Path::new(MANIFESTS).join(&file)), o, "{file}");
    }
}

#[test]
fn configmaps_parse_with_sidemounts_own_parser() {
    let path = Path::new(MANIFESTS).join("base/configmap.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::parse(&text, "base/configmap.yaml").unwrap_or_else(|e| panic!("{e}"));
    let vcs: Vec<(&str, Vec<&str>)> = c
        .vcs
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.types.iter().map(FsType::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        vcs,
        [("sshfs", vec!["fuse.sshfs"]), ("nfs", vec!["nfs", "nfs4"])]
    );
    assert!(c.vcs.iter().all(|v| v.provider == Provider::External));
    assert!(c.vcs[0].long_running && !c.vcs[1].long_running);
    assert_eq!(c.kubelet_root, Path::new("/var/lib/kubelet"));

    let seed = Path::new(MANIFESTS).join("examples/docker-provider/configmap-seed.yaml");
    let seed = config_of(&load(&seed), "configmap-seed.yaml");
    let built = builds().pop().unwrap().1;
    let docker = config_of(
        find(&built, "ConfigMap", "volume-client"),
        "docker-provider",
    );
    for c in [&seed, &docker] {
        assert_eq!(c.vcs.len(), 1);
        let v = &c.vcs[0];
        assert_eq!((v.name.as_str(), v.provider), ("nfs", Provider::Docker));
        assert_eq!(v.types, ["nfs", "nfs4"]);
        assert_eq!(v.image, "sidemount/vcs-nfs:latest");
    }
    // Only the seed's keys are left: the full form must not shadow them.
    let data = &find(&built, "ConfigMap", "volume-client")["data"];
    let keys: Vec<&String> = data.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["docker-container", "volume-plugin"]);
}

/// The base runs every external VCS as a native sidecar whose agent answers where the
/// daemon looks (`<socket dir>/agents/NAME.sock`), after the binary is copied for it.
#[test]
fn every_sidecar_serves_a_configured_vcs_where_the_daemon_looks() {
    let (_, base) = builds().remove(1);
    let config = config_of(find(&base, "ConfigMap", "volume-client"), "base");
    let ds = find(&base, "DaemonSet", "sidemount");
    let d = daemon(ds);
    let args = strings(&d["args"]);
    assert_eq!(args[0], "serve");
    assert_eq!(flag(&args, "--socket").as_deref(), Some(DAEMON_SOCKET));
    let socket_dir = Path::new(DAEMON_SOCKET).parent().unwrap();
    let config_dir = flag(&args, "--config").unwrap();
    let (volume, mount) = mount_at(ds, d, &config_dir);
    assert_eq!(volume["configMap"]["name"], "volume-client");
    assert_eq!(mount["readOnly"], true);

    let init = pod(ds)["initContainers"].as_array().unwrap();
    let copy = strings(&init[0]["command"]);
    let want = ["cp", "/usr/local/bin/sidemount", "/.sidemount/sidemount"];
    assert_eq!(copy, want);
    assert!(
        init[0]["restartPolicy"].is_null(),
        "the copy must end before the sidecars"
    );

    let mut served = Vec::new();
    for s in sidecars(ds) {
        let name = s["name"].as_str().unwrap();
        let argv = strings(&s["command"]);
        assert_eq!(argv[..2], ["/.sidemount/sidemount", "agent"], "{name}");
        let vcs = flag(&argv, "--vcs").unwrap_or_else(|| panic!("{name}: no --vcs"));
        let entry = config.vcs.iter().find(|v| v.name == vcs);
        let entry = entry.unwrap_or_else(|| panic!("{name}: --vcs {vcs} is not in the ConfigMap"));
        assert_eq!(entry.provider, Provider::External, "{name}");
        assert_eq!(s["image"], entry.image.as_str(), "{name}");
        let socket = socket_dir.join("agents").join(format!("{vcs}.sock"));
        let socket = socket.to_str().unwrap();
        assert_eq!(flag(&argv, "--socket").as_deref(), Some(socket), "{name}");
        let probe = strings(&s["startupProbe"]["exec"]["command"]);
        let want = ["/.sidemount/sidemount", "status", "--socket", socket];
        assert_eq!(probe, want, "{name}");
        assert_eq!(s["securityContext"]["privileged"], true, "{name}");
        let (v, m) = mount_at(ds, s, "/.sidemount");
        assert!(v["emptyDir"].is_object(), "{name}");
        assert_eq!(m["readOnly"], true, "{name}");
        mount_at(ds, s, "/run/sidemount");
        served.push(vcs);
    }
    let configured: Vec<&str> = config.vcs.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        served, configured,
        "one sidecar per VCS, in the ConfigMap's order"
    );
}

/// Both builds: what a node needs of the pod, and the docker overlay's changes.
#[test]
fn the_pods_reach_the_host_where_the_kubelet_does() {
    for (dir, objects) in builds() {
        let ds = find(&objects, "DaemonSet", "sidemount");
        let p = pod(ds);
        let init = p["initContainers"].as_array().unwrap().iter();
        let containers: Vec<&Value> = init.chain(p["containers"].as_array().unwrap()).collect();
        let mut used = BTreeSet::new();
        for c in &containers {
            let name = c["name"].as_str().unwrap();
            let at = format!("{dir}: {name}");
            assert_eq!(
                c["imagePullPolicy"], "IfNotPresent",
                "{at}: no registry needed"
            );
            for m in c["volumeMounts"].as_array().unwrap() {
                used.insert(m["name"].as_str().unwrap());
                let (v, _) = mount_at(ds, c, m["mountPath"].as_str().unwrap());
                // Paths the kubelet, the daemon, agents and Docker exchange mean the same.
                if let Some(host) = v["hostPath"]["path"].as_str() {
                    assert_eq!(m["mountPath"], host, "{at}");
                }
                if m["mountPath"] == "/var/lib/kubelet" {
                    assert_eq!(m["mountPropagation"], "Bidirectional", "{at}");
                    assert_eq!(c["securityContext"]["privileged"], true, "{at}");
                }
            }
            assert!(c["resources"]["requests"].is_object(), "{at}");
            assert!(c["resources"]["limits"].is_object(), "{at}");
        }
        let volumes = p["volumes"].as_array().unwrap().iter();
        let volumes: BTreeSet<&str> = volumes.map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(
            used, volumes,
            "{dir}: every volume mounted, every mount a volume"
        );

        let d = daemon(ds);
        mount_at(ds, d, "/var/lib/kubelet");
        mount_at(ds, d, "/run/sidemount");
        let probe = |kind: &str| strings(&d[kind]["exec"]["command"])[1..].to_vec();
        let status = ["status", "--socket", DAEMON_SOCKET];
        assert_eq!(probe("livenessProbe"), status, "{dir}");
        assert_eq!(probe("readinessProbe")[..3], status, "{dir}");
        assert_eq!(probe("readinessProbe")[3..], ["--healthy"], "{dir}");

        let config = config_of(find(&objects, "ConfigMap", "volume-client"), &dir);
        let docker = config.vcs.iter().any(|v| v.provider == Provider::Docker);
        let mut mounts = d["volumeMounts"].as_array().unwrap().iter();
        let sock = mounts.any(|m| m["mountPath"] == "/var/run/docker.sock");
        assert_eq!(
            sock, docker,
            "{dir}: the docker socket exactly when a VCS needs it"
        );
        if docker {
            assert!(
                sidecars(ds).is_empty(),
                "{dir}: the daemon makes the VCS containers"
            );
            // The agent binary Docker binds must be a host file the init container put there.
            let binary = flag(&strings(&d["args"]), "--agent-binary").unwrap();
            let install = strings(&p["initContainers"][0]["command"]);
            assert_eq!(install.last(), Some(&binary), "{dir}");
            let host_dir = Path::new(&binary).parent().unwrap().parent().unwrap();
            let (v, _) = mount_at(ds, d, host_dir.to_str().unwrap());
            assert!(
                v["hostPath"].is_object(),
                "{dir}: {binary} is not on the host"
            );
        }
    }
}

/// Every `sidemount SUBCOMMAND --flag` in the pods and the kubelet examples is one the
/// binary's `SUBCOMMAND --help` lists.
#[test]
fn sidemount_command_lines_are_ones_the_binary_accepts() {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for (dir, objects) in builds() {
        let ds = find(&objects, "DaemonSet", "sidemount");
        lines.extend(command_lines(ds).into_iter().map(|l| (dir.clone(), l)));
    }
    for path in files()
        .iter()
        .filter(|p| rel(p).starts_with("examples/kubelet/"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            if let Some(cmd) = line.strip_prefix("ExecStartPre=") {
                let cmd = cmd.trim_start_matches(['-', '@', '+', '!']);
                lines.push((
                    rel(path),
                    cmd.split_whitespace().map(String::from).collect(),
                ));
            }
        }
    }
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (origin, argv) in &lines {
        if argv[0].rsplit('/').next() != Some("sidemount") {
            continue;
        }
        let sub = &argv[1];
        let help = Command::new(SIDEMOUNT)
            .args([sub, "--help"])
            .output()
            .unwrap();
        if !help.status.success() {
            wrong.push(format!(
                "{origin}: `sidemount {sub}`: {}",
                text(&help).trim()
            ));
            continue;
        }
        let help = String::from_utf8_lossy(&help.stdout);
        let listed: BTreeSet<&str> = help
            .split(|c: char| c.is_whitespace() || ",=<[".contains(c))
            .collect();
        for f in argv[2..].iter().filter(|a| a.starts_with("--")) {
            let f = f.split('=').next().unwrap();
            if !listed.contains(f) {
                wrong.push(format!("{origin}: `sidemount {sub}` has no {f}"));
            }
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 20,
        "only {checked} sidemount command lines found"
    );
}

#[test]
fn the_daemon_exposes_its_metrics_where_prometheus_is_told_to_scrape() {
    for (dir, objects) in builds() {
        let ds = find(&objects, "DaemonSet", "sidemount");
        let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{dir}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{dir}");
        let port = annotations["prometheus.io/port"].as_str().unwrap();
        let d = daemon(ds);
        let argv = strings(&d["args"]);
        let address = flag(&argv, "--metrics-address")
            .unwrap_or_else(|| panic!("{dir}: the daemon has no --metrics-address"));
        assert_eq!(address.rsplit(':').next(), Some(port), "{dir}: {address}");
        let ports = d["ports"].as_array().unwrap();
        assert!(
            ports.iter().any(|p| p["name"] == "metrics"
                && p["containerPort"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(port)),
            "{dir}: {ports:?}"
        );
    }
}

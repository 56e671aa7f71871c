// What a Kubernetes control plane and kubelet would make of the chart's rendered objects,
// in the form tools/deploy-smoke plays with podman (podman kube play applies Pods, but
// ignores gRPC probes, preStop and the grace period, crashes on Secret volumes and publishes
// container ports on the host).
//
//   node smoke-pods.mjs plan <rendered.yaml> <dir>
//     writes <dir>/workloads.json (one entry per Deployment, StatefulSet and CronJob: replica
//     count, the Services that select it, probes with named ports resolved, preStop, grace,
//     claim templates) and projects every ConfigMap and Secret volume into
//     <dir>/volumes/<workload>/<volume>/ (the kubelet's projection, as plain files).
//   node smoke-pods.mjs pod <dir> <workload> <pod-name>
//     prints the Pod to play: the workload's pod template with env from ConfigMaps resolved,
//     ConfigMap and Secret volumes as hostPath directories, claim templates as the pod's own
//     claims, and no ports, probes or lifecycle (the harness does those).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const toolsModules = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../.tools/node_modules");
const YAML = require(path.join(toolsModules, "yaml"));

function fail(message) {
  process.stderr.write(`smoke-pods: ${message}\n`);
  process.exit(1);
}

function byKind(objects, kind) {
  return objects.filter((o) => o && o.kind === kind);
}

function find(objects, kind, name) {
  const found = objects.find((o) => o && o.kind === kind && o.metadata.name === name);
  if (!found) fail(`no ${kind} named ${name} in the render`);
  return found;
}

// The data of a ConfigMap or Secret as strings.
function dataOf(objects, kind, name) {
  const object = find(objects, kind, name);
  if (kind === "ConfigMap") return object.data || {};
  const data = {};
  for (const [key, value] of Object.entries(object.data || {})) {
    data[key] = Buffer.from(value, "base64").toString("utf8");
  }
  for (const [key, value] of Object.entries(object.stringData || {})) data[key] = value;
  return data;
}

function selects(selector, labels) {
  return Object.entries(selector || {}).every(([key, value]) => labels[key] === value);
}

// A probe with its named port replaced by the container's number.
function resolveProbe(probe, container) {
  if (!probe) return null;
  const resolved = JSON.parse(JSON.stringify(probe));
  for (const handler of ["httpGet", "tcpSocket", "grpc"]) {
    if (!resolved[handler] || typeof resolved[handler].port !== "string") continue;
    const port = (container.ports || []).find((p) => p.name === resolved[handler].port);
    if (!port) fail(`container ${container.name}: probe port ${resolved[handler].port} is not declared`);
    resolved[handler].port = port.containerPort;
  }
  return resolved;
}

function projectVolume(objects, volume, directory) {
  const source = volume.configMap ? ["ConfigMap", volume.configMap] : ["Secret", volume.secret];
  const [kind, spec] = source;
  const data = dataOf(objects, kind, spec.name || spec.secretName);
  const items = spec.items || Object.keys(data).map((key) => ({ key, path: key }));
  fs.mkdirSync(directory, { recursive: true, mode: 0o755 });
  for (const item of items) {
    if (!(item.key in data)) fail(`${kind} ${spec.name || spec.secretName} has no key ${item.key}`);
    const file = path.join(directory, item.path);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    fs.writeFileSync(file, data[item.key], { mode: 0o644 });
  }
}

function plan(renderedFile, dir) {
  const objects = YAML.parseAllDocuments(fs.readFileSync(renderedFile, "utf8"))
    .map((d) => d.toJS())
    .filter(Boolean);
  const services = byKind(objects, "Service");
  const workloads = [];
  const sources = [
    ...byKind(objects, "Deployment").map((o) => [o, o.spec.template, o.spec.replicas ?? 1]),
    ...byKind(objects, "StatefulSet").map((o) => [o, o.spec.template, o.spec.replicas ?? 1]),
    ...byKind(objects, "CronJob").map((o) => [o, o.spec.jobTemplate.spec.template, 0]),
  ];
  for (const [object, template, replicas] of sources) {
    const name = object.metadata.name;
    const labels = template.metadata.labels || {};
    const spec = template.spec;
    for (const volume of spec.volumes || []) {
      if (volume.configMap || volume.secret) {
        projectVolume(objects, volume, path.join(dir, "volumes", name, volume.name));
      }
    }
    workloads.push({
      name,
      kind: object.kind,
      replicas,
      minReadySeconds: object.spec.minReadySeconds || 0,
      grace: spec.terminationGracePeriodSeconds ?? 30,
      fsGroup: (spec.securityContext || {}).fsGroup ?? null,
      services: services
        .filter((s) => s.spec.selector && selects(s.spec.selector, labels))
        .map((s) => ({ name: s.metadata.name, gated: !s.spec.publishNotReadyAddresses })),
      claimTemplates: (object.spec.volumeClaimTemplates || []).map((c) => c.metadata.name),
      containers: spec.containers.map((c) => ({
        name: c.name,
        startup: resolveProbe(c.startupProbe, c),
        readiness: resolveProbe(c.readinessProbe, c),
        liveness: resolveProbe(c.livenessProbe, c),
        preStop: c.lifecycle?.preStop?.exec?.command || null,
      })),
      metricsPort: (spec.containers[0].ports || []).find((p) => /metrics/.test(p.name))?.containerPort ?? null,
      template,
    });
  }
  fs.writeFileSync(path.join(dir, "workloads.json"), JSON.stringify({ workloads, objects }, null, 1));
}

function resolveEnv(objects, env) {
  return (env || []).map((entry) => {
    const ref = entry.valueFrom?.configMapKeyRef || entry.valueFrom?.secretKeyRef;
    if (!ref) return entry;
    const kind = entry.valueFrom.configMapKeyRef ? "ConfigMap" : "Secret";
    const data = dataOf(objects, kind, ref.name);
    if (!(ref.key in data)) fail(`${kind} ${ref.name} has no key ${ref.key} (env ${entry.name})`);
    return { name: entry.name, value: String(data[ref.key]) };
  });
}

function pod(dir, workloadName, podName) {
  const { workloads, objects } = JSON.parse(fs.readFileSync(path.join(dir, "workloads.json"), "utf8"));
  const workload = workloads.find((w) => w.name === workloadName);
  if (!workload) fail(`no workload ${workloadName}`);
  const spec = JSON.parse(JSON.stringify(workload.template.spec));
  spec.volumes = (spec.volumes || []).map((volume) => {
    if (volume.configMap || volume.secret) {
      const hostPath = path.resolve(dir, "volumes", workloadName, volume.name);
      return { name: volume.name, hostPath: { path: hostPath, type: "Directory" } };
    }
    // podman 4.3 mounts a memory emptyDir as a tmpfs owned by root, where a pod running as
    // its own uid cannot write (Redis's users.conf); the kubelet gives it the pod's fsGroup.
    // Here it is a volume of the pod's own (tools/lib/deploy_kube.sh makes it, group-owned
    // by fsGroup), on disk instead of memory.
    if (volume.emptyDir && volume.emptyDir.medium === "Memory") {
      return { name: volume.name, persistentVolumeClaim: { claimName: `${volume.name}-${podName}` } };
    }
    return volume;
  });
  for (const claim of workload.claimTemplates) {
    spec.volumes.push({ name: claim, persistentVolumeClaim: { claimName: `${claim}-${podName}` } });
  }
  // A Job's pod ends; everything else the harness restarts itself (as the kubelet would).
  spec.restartPolicy = "Never";
  for (const container of spec.containers) {
    container.env = resolveEnv(objects, container.env);
    delete container.ports;
    delete container.startupProbe;
    delete container.readinessProbe;
    delete container.livenessProbe;
    delete container.lifecycle;
  }
  delete spec.topologySpreadConstraints;
  delete spec.affinity;
  const out = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: podName, labels: workload.template.metadata.labels || {} },
    spec,
  };
  process.stdout.write(YAML.stringify(out));
}

const [command, ...args] = process.argv.slice(2);
if (command === "plan" && args.length === 2) plan(...args);
else if (command === "pod" && args.length === 3) pod(...args);
else fail("usage: smoke-pods.mjs plan <rendered.yaml> <dir> | pod <dir> <workload> <pod-name>");

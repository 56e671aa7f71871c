// Checks one aspect of a render with the in-chart NATS as a JetStream cluster
// (nats.cluster.enabled): tools/check-deploy runs it once per aspect, one check each.
//
//   node tools/deploy/nats-cluster.mjs RENDER.yaml ASPECT
//
// ASPECT: statefulset | routes | fsync | disruption | probes | replicas | network, or conf:
// print the nats.conf of any render with the in-chart NATS (one server or a cluster), or users:
// its nats-users.conf.
// Prints what is wrong and exits 1, or exits 0.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const modules = process.env.LIBRARY_NODE_MODULES || join(root, ".tools", "node_modules");
const YAML = (await import(pathToFileURL(join(modules, "yaml", "dist", "index.js")))).default;
const SERVICES = ["catalog", "lending", "mypage"];

const [file, aspect] = process.argv.slice(2);
const objects = YAML.parseAllDocuments(readFileSync(file, "utf8"))
  .map((d) => d.toJS())
  .filter((o) => o && typeof o === "object");
const problems = [];
const fail = (problem) => problems.push(problem);
const component = (o) => (o.metadata.labels || {})["app.kubernetes.io/component"];
const labelsMatch = (selector, labels) => Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);

const statefulSet = objects.find((o) => o.kind === "StatefulSet" && component(o) === "nats");
if (!statefulSet) {
  console.log("no NATS StatefulSet in the render");
  process.exit(1);
}
const servers = statefulSet.spec.replicas;
const pod = statefulSet.spec.template;
const container = pod.spec.containers.find((c) => c.name === "nats");
const natsServices = objects.filter((o) => o.kind === "Service" && component(o) === "nats");
const headless = natsServices.find((s) => s.metadata.name === statefulSet.spec.serviceName);
const client = natsServices.find((s) => s.spec.clusterIP !== "None");
const natsConfigMap = objects.find((o) => o.kind === "ConfigMap" && component(o) === "nats");
const conf = (natsConfigMap && natsConfigMap.data["nats.conf"]) || "";
const config = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name.endsWith("-config"));
const port = (name) => (container.ports || []).find((p) => p.name === name);
// nats.conf's block `name { ... }` (no nested blocks in the chart's config)
const block = (name) => (conf.match(new RegExp(`^\\s*${name}\\s*\\{([\\s\\S]*?)^\\s*\\}`, "m")) || [])[1];

switch (aspect) {
  case "statefulset": {
    if (servers !== 3) fail(`StatefulSet ${statefulSet.metadata.name}: ${servers} replicas, want 3 (the default)`);
    if (!headless) fail(`serviceName ${statefulSet.spec.serviceName} is not a Service of the release`);
    else {
      if (headless.spec.clusterIP !== "None") fail(`${headless.metadata.name}: not headless`);
      if (headless.spec.publishNotReadyAddresses !== true) fail(`${headless.metadata.name}: starting servers would not find each other (publishNotReadyAddresses is not true)`);
      if (!headless.spec.ports.some((p) => p.port === 6222 && p.targetPort === "cluster")) fail(`${headless.metadata.name}: no port 6222 -> cluster`);
    }
    if (!client) fail("no client Service (a ClusterIP Service of the NATS pods)");
    else if (!client.spec.ports.some((p) => p.port === 4222 && p.targetPort === "client")) fail(`${client.metadata.name}: no port 4222 -> client`);
    for (const [name, number] of [["client", 4222], ["cluster", 6222], ["monitor", 8222]])
      if (!port(name) || port(name).containerPort !== number) fail(`container port ${name} is not ${number}`);
    const claims = statefulSet.spec.volumeClaimTemplates || [];
    const data = claims.find((c) => c.metadata.name === "data");
    if (!data) fail("no volumeClaimTemplate named data (a PVC per server)");
    else {
      if (!(data.spec.accessModes || []).includes("ReadWriteOnce")) fail("the data claim is not ReadWriteOnce");
      if (!data.spec.resources || !data.spec.resources.requests || !data.spec.resources.requests.storage) fail("the data claim requests no storage");
    }
    const storeDir = (conf.match(/store_dir:\s*(\S+)/) || [])[1];
    const mount = (container.volumeMounts || []).find((m) => m.name === "data");
    if (!mount || mount.mountPath !== storeDir) fail(`JetStream's store_dir ${storeDir} is not where the data claim is mounted (${mount && mount.mountPath})`);
    if ((pod.spec.volumes || []).some((v) => v.name === "data")) fail("a pod volume named data shadows the claim template");
    break;
  }
  case "routes": {
    const cluster = block("cluster");
    if (!cluster) {
      fail("nats.conf has no cluster { } block");
      break;
    }
    if (!/^\s*name:\s*\S+/m.test(cluster)) fail("cluster has no name");
    if (!/^\s*port:\s*6222\s*$/m.test(cluster)) fail("cluster port is not 6222");
    const routes = [...cluster.matchAll(/nats:\/\/[^\s,\]]+/g)].map((m) => m[0]);
    const want = Array.from({ length: servers }, (_, i) => `nats://${statefulSet.metadata.name}-${i}.${statefulSet.spec.serviceName}:6222`);
    if (routes.length !== 3) fail(`${routes.length} routes, want 3`);
    if (JSON.stringify(routes) !== JSON.stringify(want)) fail(`routes ${routes.join(" ")}, want ${want.join(" ")} (each pod under the headless Service)`);
    // server_name: the pod's own name, from the environment
    const serverName = (conf.match(/^\s*server_name:\s*(\S+)/m) || [])[1];
    const variable = serverName && serverName.startsWith("$") ? serverName.slice(1) : null;
    const env = variable && (container.env || []).find((e) => e.name === variable);
    if (!env || !env.valueFrom || !env.valueFrom.fieldRef || env.valueFrom.fieldRef.fieldPath !== "metadata.name")
      fail(`server_name ${serverName} is not the pod's name (a $VARIABLE set from metadata.name): every server needs its own`);
    break;
  }
  case "fsync": {
    const jetstream = block("jetstream");
    const sync = jetstream && (jetstream.match(/^\s*sync_interval:\s*"?([^"\s]+)"?/m) || [])[1];
    if (sync !== "always") fail(`JetStream sync_interval is ${sync || "not set (the server's 2 minutes)"}, want always`);
    break;
  }
  case "disruption": {
    const budgets = objects.filter((o) => o.kind === "PodDisruptionBudget" && labelsMatch(o.spec.selector.matchLabels, pod.metadata.labels));
    if (budgets.length !== 1) fail(`${budgets.length} PodDisruptionBudgets select the NATS pods, want 1`);
    else if (budgets[0].spec.maxUnavailable !== 1) fail(`PDB maxUnavailable ${budgets[0].spec.maxUnavailable}, want 1 (2 of 3 keep the quorum)`);
    const terms = (((pod.spec.affinity || {}).podAntiAffinity || {}).requiredDuringSchedulingIgnoredDuringExecution || []);
    if (!terms.some((t) => t.topologyKey === "kubernetes.io/hostname" && labelsMatch(t.labelSelector.matchLabels, pod.metadata.labels)))
      fail("no required pod anti-affinity on kubernetes.io/hostname: two servers could share a node");
    break;
  }
  case "probes": {
    const path = (probe) => container[probe] && container[probe].httpGet && container[probe].httpGet.path;
    const onMonitor = (probe) => container[probe] && container[probe].httpGet && container[probe].httpGet.port === "monitor";
    if (path("readinessProbe") !== "/healthz?js-enabled-only=true") fail(`readiness ${path("readinessProbe")}, want /healthz?js-enabled-only=true`);
    if (path("startupProbe") !== "/healthz") fail(`startup ${path("startupProbe")}, want /healthz (current with the meta leader, streams caught up)`);
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) if (!onMonitor(probe)) fail(`${probe} is not on the monitor port`);
    if (!/^\s*http_port:\s*8222\s*$/m.test(conf)) fail("nats.conf does not serve monitoring on 8222");
    break;
  }
  case "replicas": {
    if (!config) {
      fail("no <fullname>-config ConfigMap");
      break;
    }
    if (config.data.NATS_REPLICAS !== "3") fail(`NATS_REPLICAS ${config.data.NATS_REPLICAS}, want 3`);
    if (!client || config.data.NATS_URL !== `nats://${client.metadata.name}:4222`) fail(`NATS_URL ${config.data.NATS_URL} is not the client Service`);
    for (const service of SERVICES) {
      const deployment = objects.find((o) => o.kind === "Deployment" && component(o) === service);
      const c = deployment && deployment.spec.template.spec.containers.find((x) => x.name === service);
      for (const name of ["NATS_REPLICAS", "NATS_URL"]) {
        const e = c && (c.env || []).find((x) => x.name === name);
        const ref = e && e.valueFrom && e.valueFrom.configMapKeyRef;
        if (!ref || ref.name !== config.metadata.name || ref.key !== name) fail(`${service}: ${name} does not come from ${config.metadata.name}`);
      }
    }
    break;
  }
  case "network": {
    const policies = objects.filter((o) => o.kind === "NetworkPolicy" && labelsMatch(o.spec.podSelector.matchLabels, pod.metadata.labels));
    const allows = (portName, labels) =>
      policies.some((n) =>
        (n.spec.ingress || []).some(
          (r) => (r.ports || []).some((p) => p.port === portName) && (r.from || []).some((peer) => peer.podSelector && !peer.namespaceSelector && labelsMatch(peer.podSelector.matchLabels, labels))
        )
      );
    if (!policies.length) fail("no NetworkPolicy selects the NATS pods");
    if (!allows("cluster", pod.metadata.labels)) fail("the NATS servers may not reach each other on the route port (cluster, 6222)");
    for (const service of SERVICES) {
      const deployment = objects.find((o) => o.kind === "Deployment" && component(o) === service);
      if (!allows("client", deployment.spec.template.metadata.labels)) fail(`${service} may not reach NATS's client port`);
      if (allows("cluster", deployment.spec.template.metadata.labels)) fail(`${service} may reach the route port, which it never needs`);
    }
    // with the mesh: the NATS pods' own ALLOW policy (besides the release's allow-nothing)
    const authorization = objects.find((o) => o.kind === "AuthorizationPolicy" && component(o) === "nats" && o.spec.action === "ALLOW");
    if (objects.some((o) => o.kind === "AuthorizationPolicy") && !authorization) fail("the mesh is on but no AuthorizationPolicy allows NATS's ports");
    if (authorization) {
      const account = pod.spec.serviceAccountName;
      const routeRule = (authorization.spec.rules || []).find((r) => (r.to || []).some((t) => (t.operation.ports || []).includes("6222")));
      const principals = routeRule ? routeRule.from.flatMap((f) => f.source.principals || []) : [];
      if (!principals.some((p) => p.endsWith(`/sa/${account}`))) fail(`AuthorizationPolicy ${authorization.metadata.name}: the servers' principal (sa/${account}) may not use the route port 6222`);
    }
    break;
  }
  case "conf":
    process.stdout.write(conf);
    break;
  case "users":
    process.stdout.write((natsConfigMap && natsConfigMap.data["nats-users.conf"]) || "");
    break;
  default:
    console.log(`unknown aspect ${aspect}`);
    process.exit(2);
}
for (const problem of problems) console.log(problem);
process.exit(problems.length ? 1 : 0);

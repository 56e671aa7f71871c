// Cross-checks the deployment against the sources, so the chart, the Istio resources, the
// local gateway and the Containerfiles cannot drift from what the binaries do:
// ports, env names, health names, routes, streaming methods, admin methods, service calls,
// pod security, and the Containerfiles and Jenkinsfile.
//
//   node tools/deploy/cross-check.mjs --render NAME=FILE... --mesh DIR --gateway NGINX_CONF
//
// Prints "ok    <check>" or "FAIL  <check>" (with the reasons indented) per check, and ends
// with "N passed, N failed"; exits 1 on any failure.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const modules = process.env.LIBRARY_NODE_MODULES || join(root, ".tools", "node_modules");
const YAML = (await import(pathToFileURL(join(modules, "yaml", "dist", "index.js")))).default;
const read = (path) => readFileSync(join(root, path), "utf8");
const SERVICES = ["catalog", "lending", "mypage"];

// --- arguments --------------------------------------------------------------------------------
const renders = {}; // name -> [objects]
let meshDir = null;
let gatewayConf = null;
for (let i = 2; i < process.argv.length; i++) {
  const argument = process.argv[i];
  if (argument === "--render") {
    const [name, file] = process.argv[++i].split("=");
    renders[name] = loadObjects(readFileSync(file, "utf8"));
  } else if (argument === "--mesh") meshDir = process.argv[++i];
  else if (argument === "--gateway") gatewayConf = process.argv[++i];
  else throw new Error(`unknown argument ${argument}`);
}
function loadObjects(text) {
  return YAML.parseAllDocuments(text).map((d) => d.toJS()).filter((o) => o && typeof o === "object");
}

// --- what the sources say -----------------------------------------------------------------------
function configNames(text) {
  // {"NAME", CONFIG_KIND, default-or-NULL, ...} rows of a config table
  const rows = [...text.matchAll(/\{\s*"([A-Z][A-Z0-9_]*)",\s*CONFIG_[A-Z_]+,\s*(NULL|"[^"]*")/g)];
  return rows.map((m) => ({ name: m[1], required: m[2] === "NULL" }));
}
const sharedSource = read("libshared/service.c");
const natsConnectionSource = read("libshared/nats_connection.c");
const commonConfig = configNames(sharedSource.slice(sharedSource.indexOf("common_config[]"), sharedSource.indexOf("COMMON_CONFIG_COUNT")));
const binaries = {};
for (const service of SERVICES) {
  const main = read(`services/${service}/main.c`);
  // The method table and service name: handlers.c today, wherever in the folder tomorrow.
  const handlers = readdirSync(join(root, "services", service))
    .filter((f) => /\.[ch]$/.test(f))
    .sort((a, b) => (a === "handlers.c" ? -1 : b === "handlers.c" ? 1 : a.localeCompare(b)))
    .map((f) => read(`services/${service}/${f}`))
    .join("\n");
  const grpcPort = (main.match(/\.default_grpc_port\s*=\s*"(\d+)"/) || [])[1];
  const metricsPort = (main.match(/\.default_metrics_port\s*=\s*"(\d+)"/) || [])[1];
  const own = configNames(main);
  // GRPC_PORT and METRICS_PORT have per-service defaults (service_definition), not NULL.
  const required = [...commonConfig, ...own].filter((c) => c.required && !["GRPC_PORT", "METRICS_PORT"].includes(c.name)).map((c) => c.name);
  // RPC_UNARY("Name", ..., RPC_ACCESS_X), RPC_SERVER_STREAM(...) and their variants
  // (e.g. RPC_UNARY_NONBLOCKING): any RPC_* macro whose first argument is a method name.
  const methods = [...handlers.matchAll(/\bRPC_([A-Z_]+)\(\s*"(\w+)"[\s\S]*?(RPC_ACCESS_[A-Z]+)\s*\)/g)].map((m) => ({
    name: m[2],
    streaming: m[1].includes("STREAM"),
    access: m[3],
  }));
  const grpcService = (handlers.match(/\.name\s*=\s*"(library\.[\w.]+)"/) || [])[1];
  const calls = [];
  for (const file of readdirSync(join(root, "services", service)).filter((f) => f.endsWith(".c"))) {
    for (const m of read(`services/${service}/${file}`).matchAll(/"\/([\w.]+)\/(\w+)"/g)) calls.push(`${m[1]}/${m[2]}`);
  }
  binaries[service] = {
    grpcPort: Number(grpcPort),
    metricsPort: Number(metricsPort),
    env: new Set([...commonConfig, ...own].map((c) => c.name)),
    required,
    methods,
    grpcService,
    calls: [...new Set(calls)],
  };
}

// Every service and method of the public API (proto/) and of health and reflection.
function protoServices(text) {
  const packageName = (text.match(/^package\s+([\w.]+)\s*;/m) || [])[1];
  const services = [];
  for (const block of text.matchAll(/^service\s+(\w+)\s*\{([\s\S]*?)^\}/gm)) {
    const methods = [...block[2].matchAll(/rpc\s+(\w+)\s*\(\s*(stream\s+)?[\w.]+\s*\)\s*returns\s*\(\s*(stream\s+)?/g)].map((m) => ({
      name: m[1],
      streaming: Boolean(m[2] || m[3]),
    }));
    services.push({ name: `${packageName}.${block[1]}`, methods });
  }
  return services;
}
const apiServices = [];
for (const area of readdirSync(join(root, "proto", "library"))) {
  for (const file of readdirSync(join(root, "proto", "library", area, "v1")).filter((f) => f.endsWith(".proto"))) {
    apiServices.push(...protoServices(read(`proto/library/${area}/v1/${file}`)));
  }
}
const systemServices = [];
for (const file of ["grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto"]) {
  const path = join("/usr/share/grpc-proto", file);
  if (existsSync(path)) systemServices.push(...protoServices(readFileSync(path, "utf8")));
}
const routesTable = read("mesh/routes.tsv")
  .split("\n")
  .filter((l) => l.trim() && !l.startsWith("#"))
  .map((l) => {
    const [service, backend, port] = l.split("\t");
    return { service, backend, port: Number(port) };
  });
const chartValues = YAML.parse(read("charts/library/values.yaml"));

// --- checks -------------------------------------------------------------------------------------
let passed = 0;
let failed = 0;
function check(name, body) {
  const problems = [];
  try {
    body((problem) => problems.push(problem));
  } catch (error) {
    problems.push(`error: ${error.stack || error}`);
  }
  if (problems.length) {
    failed++;
    console.log(`FAIL  ${name}`);
    for (const p of problems) console.log(`        ${p}`);
  } else {
    passed++;
    console.log(`ok    ${name}`);
  }
}
const find = (objects, kind, name) => objects.find((o) => o.kind === kind && o.metadata.name === name);
const byKind = (objects, kind) => objects.filter((o) => o.kind === kind);
const component = (o) => (o.metadata.labels || {})["app.kubernetes.io/component"];
function podSpecs(objects) {
  const specs = [];
  for (const o of objects) {
    if (o.kind === "Deployment" || o.kind === "StatefulSet") specs.push({ owner: `${o.kind}/${o.metadata.name}`, template: o.spec.template });
    if (o.kind === "CronJob") specs.push({ owner: `CronJob/${o.metadata.name}`, template: o.spec.jobTemplate.spec.template });
  }
  return specs;
}
const labelsMatch = (selector, labels) => Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
const durationSeconds = (text) => {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  return m ? Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2]] : NaN;
};

check(`sources: config tables, default ports, gRPC service names and methods found (${commonConfig.length} common settings)`, (fail) => {
  if (commonConfig.length < 10) fail(`only ${commonConfig.length} common settings found in libshared/service.c`);
  for (const service of SERVICES) {
    const b = binaries[service];
    if (!b.grpcPort || !b.metricsPort) fail(`${service}: default ports not found in main.c`);
    if (!b.grpcService) fail(`${service}: gRPC service name not found in handlers.c`);
    if (!b.methods.length) fail(`${service}: no methods found in handlers.c`);
  }
  if (apiServices.length < 3) fail("fewer than 3 services found in proto/");
  if (systemServices.length < 3) fail("health and reflection protos not found in /usr/share/grpc-proto (tools/install installs grpc-proto)");
});

check("DESIGN.md ports: catalog 50051/9464, lending 50052/9465, mypage 50053/9466 in the binaries and chart defaults", (fail) => {
  const design = { catalog: [50051, 9464], lending: [50052, 9465], mypage: [50053, 9466] };
  for (const service of SERVICES) {
    const [grpc, metrics] = design[service];
    if (binaries[service].grpcPort !== grpc || binaries[service].metricsPort !== metrics)
      fail(`${service}: binary defaults ${binaries[service].grpcPort}/${binaries[service].metricsPort}`);
    const ports = chartValues[service].ports;
    if (ports.grpc !== grpc || ports.metrics !== metrics) fail(`${service}: chart values ${ports.grpc}/${ports.metrics}`);
  }
});

check("handlers and protos agree: every method a service registers is in proto/, with the same streaming kind", (fail) => {
  for (const service of SERVICES) {
    const b = binaries[service];
    const proto = apiServices.find((s) => s.name === b.grpcService);
    if (!proto) {
      fail(`${b.grpcService} is not in proto/`);
      continue;
    }
    for (const m of b.methods) {
      const p = proto.methods.find((x) => x.name === m.name);
      if (!p) fail(`${b.grpcService}/${m.name} is registered but not in the proto`);
      else if (p.streaming !== m.streaming) fail(`${b.grpcService}/${m.name}: streaming differs`);
    }
    for (const p of proto.methods) if (!b.methods.find((m) => m.name === p.name)) fail(`${b.grpcService}/${p.name} is in the proto but not registered`);
  }
});

for (const [renderName, objects] of Object.entries(renders)) {
  const values = renderName; // label only
  check(`${values}: every Service port, container port, probe port, GRPC_PORT/METRICS_PORT and scrape port match the binary and mesh/routes.tsv`, (fail) => {
    for (const service of SERVICES) {
      const deployment = objects.find((o) => o.kind === "Deployment" && component(o) === service);
      const svc = objects.find((o) => o.kind === "Service" && component(o) === service);
      if (!deployment || !svc) {
        fail(`${service}: no Deployment or Service`);
        continue;
      }
      const pod = deployment.spec.template;
      const container = pod.spec.containers.find((c) => c.name === service);
      const containerPort = (name) => (container.ports.find((p) => p.name === name) || {}).containerPort;
      const env = Object.fromEntries((container.env || []).filter((e) => "value" in e).map((e) => [e.name, e.value]));
      const grpc = containerPort("grpc");
      const metrics = containerPort("http-metrics");
      const want = binaries[service];
      const grpcServicePort = svc.spec.ports.find((p) => p.name === "grpc");
      if (!grpcServicePort) fail(`${service}: Service has no port named grpc`);
      else if (grpcServicePort.port !== grpc || grpcServicePort.targetPort !== "grpc") fail(`${service}: Service grpc port ${grpcServicePort.port} -> ${grpcServicePort.targetPort}, container ${grpc}`);
      if (Number(env.GRPC_PORT) !== grpc) fail(`${service}: GRPC_PORT ${env.GRPC_PORT} but container port ${grpc}`);
      if (Number(env.METRICS_PORT) !== metrics) fail(`${service}: METRICS_PORT ${env.METRICS_PORT} but container port ${metrics}`);
      if (Number(pod.metadata.annotations["prometheus.io/port"]) !== metrics) fail(`${service}: prometheus.io/port is not the metrics port`);
      if (grpc !== want.grpcPort || metrics !== want.metricsPort) fail(`${service}: ports ${grpc}/${metrics}, the binary's defaults are ${want.grpcPort}/${want.metricsPort}`);
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const p = container[probe];
        if (!p || !p.grpc) fail(`${service}: ${probe} is not a gRPC probe`);
        else if (p.grpc.port !== grpc) fail(`${service}: ${probe} on port ${p.grpc.port}, gRPC is on ${grpc}`);
      }
      if (container.readinessProbe && container.readinessProbe.grpc && container.readinessProbe.grpc.service !== want.grpcService)
        fail(`${service}: readiness asks health for "${container.readinessProbe.grpc.service}", the service registers "${want.grpcService}"`);
      for (const route of routesTable.filter((r) => r.backend === service)) {
        if (route.port !== grpc) fail(`routes.tsv: ${route.service} goes to ${service}:${route.port}, its Service port is ${grpc}`);
      }
    }
  });

  check(`${values}: every env name is one the binary reads, and every required setting is set`, (fail) => {
    for (const { owner, template } of podSpecs(objects)) {
      for (const container of template.spec.containers) {
        const service = SERVICES.find((s) => container.name === s || (owner.includes(`${s}-`) && container.name === "rebuild"));
        if (!service) continue; // nats, redis
        const names = (container.env || []).map((e) => e.name);
        for (const name of names) if (!binaries[service].env.has(name)) fail(`${owner} ${container.name}: ${name} is not read by ${service}`);
        const duplicates = names.filter((n, i) => names.indexOf(n) !== i);
        if (duplicates.length) fail(`${owner} ${container.name}: set twice: ${duplicates.join(", ")}`);
        for (const name of binaries[service].required) if (!names.includes(name)) fail(`${owner} ${container.name}: required ${name} is not set`);
        for (const e of container.env || []) {
          const ref = e.valueFrom && e.valueFrom.configMapKeyRef;
          if (!ref) continue;
          const configMap = find(objects, "ConfigMap", ref.name);
          if (!configMap || !(ref.key in configMap.data)) fail(`${owner}: ${e.name} refers to missing ConfigMap key ${ref.name}/${ref.key}`);
        }
      }
    }
  });

  check(`${values}: NATS_URL, REDIS_URL and CATALOG_ADDR point at what the release runs or the external URLs (a list in NATS_URL only if libshared splits it)`, (fail) => {
    const config = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name.endsWith("-config"));
    const data = config.data;
    const service = (c) => objects.find((o) => o.kind === "Service" && component(o) === c);
    const catalog = service("catalog");
    if (data.CATALOG_ADDR !== `${catalog.metadata.name}:${catalog.spec.ports.find((p) => p.name === "grpc").port}`) fail(`CATALOG_ADDR ${data.CATALOG_ADDR}`);
    for (const [key, c, scheme, port] of [["NATS_URL", "nats", "nats", 4222], ["REDIS_URL", "redis", "redis", 6379]]) {
      const inChart = objects.filter((o) => o.kind === "Service" && component(o) === c);
      if (inChart.length) {
        // one of the component's Services (with NATS in a cluster: its client Service)
        const target = inChart.find((s) => data[key] === `${scheme}://${s.metadata.name}:${port}`);
        if (!target) fail(`${key} ${data[key]} is not the in-chart ${c}`);
        else if (!target.spec.ports.some((p) => p.port === port)) fail(`${c} Service ${target.metadata.name} has no port ${port}`);
      } else if (!data[key] || !data[key].startsWith(`${scheme}://`)) fail(`${key} "${data[key]}" is not an external ${scheme}:// URL`);
    }
    // libshared gives NATS_URL to natsOptions_SetURL, which takes one URL (NATS.c 3.4 splits a
    // comma-separated list only in natsConnection_ConnectTo): a list needs libshared to split it.
    if ((data.NATS_URL || "").includes(",") && !/natsOptions_SetServers|natsConnection_ConnectTo/.test(natsConnectionSource))
      fail(`NATS_URL lists several URLs (${data.NATS_URL}), but libshared/nats_connection.c hands it to natsOptions_SetURL, which takes one`);
    if (!/^\d+(ms|s|m|h|d)$/.test(data.LOAN_PERIOD)) fail(`LOAN_PERIOD ${data.LOAN_PERIOD}`);
    if (!["debug", "info", "warn", "error"].includes(data.LOG_LEVEL)) fail(`LOG_LEVEL ${data.LOG_LEVEL}`);
  });

  check(`${values}: pods run as non-root with a read-only root, no privilege escalation, ALL capabilities dropped, resources set`, (fail) => {
    for (const { owner, template } of podSpecs(objects)) {
      const pod = template.spec.securityContext || {};
      if (pod.runAsNonRoot !== true) fail(`${owner}: runAsNonRoot is not true`);
      if (!(pod.runAsUser > 0)) fail(`${owner}: runAsUser is not a non-zero uid`);
      if (template.spec.automountServiceAccountToken !== false) fail(`${owner}: mounts an API token it does not need`);
      for (const c of template.spec.containers) {
        const s = c.securityContext || {};
        if (s.readOnlyRootFilesystem !== true) fail(`${owner} ${c.name}: root file system is writable`);
        if (s.allowPrivilegeEscalation !== false) fail(`${owner} ${c.name}: allowPrivilegeEscalation is not false`);
        if (!s.capabilities || !(s.capabilities.drop || []).includes("ALL")) fail(`${owner} ${c.name}: capabilities ALL not dropped`);
        if (!c.resources || !c.resources.requests || !c.resources.requests.cpu || !c.resources.requests.memory) fail(`${owner} ${c.name}: no cpu/memory requests`);
        if (!c.resources || !c.resources.limits || !c.resources.limits.memory) fail(`${owner} ${c.name}: no memory limit`);
      }
    }
  });

  check(`${values}: rollouts keep capacity, the drain fits in the grace period, HPA/PDB/Services/NetworkPolicies select real pods`, (fail) => {
    const config = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name.endsWith("-config"));
    const drain = durationSeconds(config.data.DRAIN_GRACE);
    const pods = podSpecs(objects).map((p) => p.template.metadata.labels);
    for (const d of byKind(objects, "Deployment")) {
      const strategy = d.spec.strategy || {};
      if (strategy.type !== "RollingUpdate" || strategy.rollingUpdate.maxUnavailable !== 0) fail(`${d.metadata.name}: rolling update may drop capacity`);
      const spec = d.spec.template.spec;
      const preStop = ((spec.containers[0].lifecycle || {}).preStop || {}).exec;
      const sleep = preStop && preStop.command[0] === "sleep" ? Number(preStop.command[1]) : 0;
      if (!(spec.terminationGracePeriodSeconds > sleep + drain)) fail(`${d.metadata.name}: terminationGracePeriodSeconds ${spec.terminationGracePeriodSeconds} <= preStop ${sleep} s + DRAIN_GRACE ${drain} s`);
      const hpa = byKind(objects, "HorizontalPodAutoscaler").find((h) => h.spec.scaleTargetRef.name === d.metadata.name);
      if (hpa && d.spec.replicas !== undefined) fail(`${d.metadata.name}: has replicas and an HPA (helm upgrades would fight the HPA)`);
      if (!hpa && !(d.spec.replicas >= 1)) fail(`${d.metadata.name}: neither replicas nor an HPA`);
      if (!labelsMatch(d.spec.selector.matchLabels, d.spec.template.metadata.labels)) fail(`${d.metadata.name}: selector does not match its pods`);
    }
    for (const h of byKind(objects, "HorizontalPodAutoscaler")) {
      if (!find(objects, h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name)) fail(`HPA ${h.metadata.name}: no target`);
      if (!(h.spec.minReplicas <= h.spec.maxReplicas)) fail(`HPA ${h.metadata.name}: min above max`);
    }
    for (const p of byKind(objects, "PodDisruptionBudget")) if (!pods.some((l) => labelsMatch(p.spec.selector.matchLabels, l))) fail(`PDB ${p.metadata.name} selects no pod`);
    for (const s of byKind(objects, "Service")) {
      const matching = podSpecs(objects).filter((p) => labelsMatch(s.spec.selector, p.template.metadata.labels));
      if (!matching.length) fail(`Service ${s.metadata.name} selects no pod`);
      for (const port of s.spec.ports) {
        if (typeof port.targetPort === "string" && !matching.every((p) => p.template.spec.containers.some((c) => (c.ports || []).some((cp) => cp.name === port.targetPort))))
          fail(`Service ${s.metadata.name}: targetPort ${port.targetPort} is not a named container port`);
      }
    }
    for (const n of byKind(objects, "NetworkPolicy")) {
      const selected = podSpecs(objects).filter((p) => labelsMatch(n.spec.podSelector.matchLabels, p.template.metadata.labels));
      if (!selected.length) fail(`NetworkPolicy ${n.metadata.name} selects no pod`);
      for (const rule of n.spec.ingress || []) {
        for (const port of rule.ports || []) {
          if (typeof port.port === "string" && !selected.every((p) => p.template.spec.containers.some((c) => (c.ports || []).some((cp) => cp.name === port.port))))
            fail(`NetworkPolicy ${n.metadata.name}: port ${port.port} is not a named port of the pods it selects`);
        }
      }
    }
  });

  check(`${values}: NetworkPolicies let lending reach catalog, the services reach NATS and mypage reach Redis`, (fail) => {
    const policies = byKind(objects, "NetworkPolicy");
    const labelsOf = (c) => (podSpecs(objects).find((p) => component({ metadata: p.template.metadata }) === c) || {}).template?.metadata.labels;
    const allows = (from, to, portName) => {
      const target = labelsOf(to);
      const source = labelsOf(from);
      if (!target || !source) return null; // not in this release (external)
      return policies.some(
        (n) =>
          labelsMatch(n.spec.podSelector.matchLabels, target) &&
          (n.spec.ingress || []).some((r) => (r.ports || []).some((p) => p.port === portName) && (r.from || []).some((peer) => peer.podSelector && !peer.namespaceSelector && labelsMatch(peer.podSelector.matchLabels, source)))
      );
    };
    const pairs = [["lending", "catalog", "grpc"], ...SERVICES.map((s) => [s, "nats", "client"]), ["mypage", "redis", "redis"]];
    for (const [from, to, port] of pairs) if (allows(from, to, port) === false) fail(`${from} cannot reach ${to}:${port}`);
    for (const [from, to, port] of [["catalog", "redis", "redis"], ["mypage", "catalog", "grpc"]]) if (allows(from, to, port) === true) fail(`${from} may reach ${to}:${port}, which it never needs`);
  });
}

// --- the binaries themselves accept the rendered settings ------------------------------------------
// Each built service is started with its container's environment from the render (ConfigMap
// keys resolved). Only what needs a cluster is replaced: the key file and the log-level file
// (written here with the rendered content), a free gRPC port, metrics off, and an unreachable
// NATS with no connect wait. A setting the binary refuses exits 2 with "configuration error";
// with every setting accepted it gets as far as NATS and exits 1.
const freePort = await new Promise((resolve) => {
  const server = createServer();
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});
const scratch = mkdtempSync(join(tmpdir(), "cross-check-"));
const keyFile = join(scratch, "jwt-public.pem");
spawnSync("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", join(scratch, "key.pem")]);
spawnSync("openssl", ["ec", "-in", join(scratch, "key.pem"), "-pubout", "-out", keyFile], { stdio: "ignore" });
for (const [renderName, objects] of Object.entries(renders)) {
  check(`${renderName}: the built binaries accept every rendered setting (started with the pods' environment)`, (fail) => {
    let ran = 0;
    for (const { owner, template } of podSpecs(objects)) {
      for (const container of template.spec.containers) {
        const service = SERVICES.find((s) => container.name === s || (owner.includes(`${s}-`) && container.name === "rebuild"));
        if (!service || container.name === "rebuild") continue;
        const binary = join(root, "build", "services", service, service);
        if (!existsSync(binary)) continue;
        const env = { PATH: process.env.PATH };
        for (const e of container.env || []) {
          if ("value" in e) env[e.name] = String(e.value);
          else if (e.valueFrom && e.valueFrom.configMapKeyRef) {
            const ref = e.valueFrom.configMapKeyRef;
            env[e.name] = String(find(objects, "ConfigMap", ref.name).data[ref.key]);
          } else if (e.valueFrom && e.valueFrom.secretKeyRef) {
            // the rendered Secret's value, or a stand-in for a Secret made outside the chart
            const ref = e.valueFrom.secretKeyRef;
            const secret = objects.find((o) => o.kind === "Secret" && o.metadata.name === ref.name);
            env[e.name] = secret && secret.data && secret.data[ref.key] ? Buffer.from(secret.data[ref.key], "base64").toString() : "from-a-secret";
          }
        }
        const levelFile = join(scratch, "LOG_LEVEL");
        writeFileSync(levelFile, `${env.LOG_LEVEL || "info"}\n`);
        if (env.POLICY_FILE) {
          // the policy file as the pod sees it: the rendered ConfigMap key behind its mount
          const mount = (container.volumeMounts || []).find((m) => m.mountPath === dirname(env.POLICY_FILE));
          const volume = mount && (template.spec.volumes || []).find((v) => v.name === mount.name);
          const item = volume && volume.configMap && (volume.configMap.items || []).find((i) => i.path === basename(env.POLICY_FILE));
          const configMap = item && find(objects, "ConfigMap", volume.configMap.name);
          if (!configMap || !(item.key in (configMap.data || {}))) {
            fail(`${owner}: POLICY_FILE ${env.POLICY_FILE} is not a key of a mounted ConfigMap`);
            continue;
          }
          env.POLICY_FILE = join(scratch, "policy.json");
          writeFileSync(env.POLICY_FILE, configMap.data[item.key]);
        }
        Object.assign(env, {
          JWT_PUBLIC_KEY_FILE: keyFile,
          LOG_LEVEL_FILE: levelFile,
          GRPC_PORT: String(freePort),
          METRICS_PORT: "0",
          NATS_URL: "nats://127.0.0.1:1",
          NATS_CONNECT_TIMEOUT: "100ms", // the shortest the binaries accept
        });
        const run = spawnSync(binary, [], { env, timeout: 20000, encoding: "utf8" });
        ran++;
        const output = `${run.stdout || ""}${run.stderr || ""}`;
        if (run.status === 2 || /configuration error/.test(output)) fail(`${owner}: ${service} refuses its settings: ${output.split("\n")[0]}`);
        else if (run.status !== 1) fail(`${owner}: ${service} exited ${run.status} (${run.signal || "no signal"}), expected 1 (NATS unreachable): ${output.slice(0, 300)}`);
      }
    }
    if (!ran) console.log(`        (no service built in build/: not run)`);
  });
}
rmSync(scratch, { recursive: true, force: true });

// --- routes: proto -> routes.tsv -> VirtualService and local gateway -----------------------------
const servedBy = {}; // gRPC service -> backend that registers it
for (const service of SERVICES) servedBy[binaries[service].grpcService] = service;
function virtualServiceRoute(vs, path) {
  // first matching http route, as Istio does
  for (const route of vs.spec.http) {
    for (const match of route.match || [{}]) {
      const uri = match.uri || {};
      if ((uri.exact !== undefined && uri.exact === path) || (uri.prefix !== undefined && path.startsWith(uri.prefix))) return route;
    }
  }
  return null;
}
const meshObjects = [];
if (meshDir) for (const file of readdirSync(meshDir).filter((f) => f.endsWith(".yaml"))) meshObjects.push(...loadObjects(readFileSync(join(meshDir, file), "utf8")));
const meshSets = { "mesh/istio": meshObjects };
for (const [name, objects] of Object.entries(renders)) if (objects.some((o) => o.kind === "VirtualService")) meshSets[name] = objects;

check("mesh/routes.tsv: every public gRPC service in proto/ has a row, each row goes to the backend that serves it", (fail) => {
  for (const s of apiServices) {
    const row = routesTable.find((r) => r.service === s.name);
    if (!row) fail(`${s.name} is not in routes.tsv`);
    else if (servedBy[s.name] && row.backend !== servedBy[s.name]) fail(`${s.name} goes to ${row.backend}, ${servedBy[s.name]} serves it`);
  }
  for (const r of routesTable) {
    if (!SERVICES.includes(r.backend)) fail(`${r.service}: backend ${r.backend} is not a service of the chart`);
    if (r.port !== binaries[r.backend]?.grpcPort) fail(`${r.service}: port ${r.port} is not ${r.backend}'s gRPC port`);
  }
  for (const s of systemServices) if (!routesTable.find((r) => r.service === s.name)) fail(`${s.name} (health/reflection) is not in routes.tsv`);
});

const allMethods = [...apiServices, ...systemServices].flatMap((s) => s.methods.map((m) => ({ path: `/${s.name}/${m.name}`, service: s.name, streaming: m.streaming })));
for (const [name, objects] of Object.entries(meshSets)) {
  check(`${name}: the VirtualService routes every gRPC method (${allMethods.length}) to its backend; streams without timeout or retries`, (fail) => {
    const vs = byKind(objects, "VirtualService");
    if (vs.length !== 1) return fail(`${vs.length} VirtualServices`);
    for (const m of allMethods) {
      const route = virtualServiceRoute(vs[0], m.path);
      const row = routesTable.find((r) => r.service === m.service);
      if (!route) {
        fail(`${m.path} is not routed`);
        continue;
      }
      const destination = route.route[0].destination;
      if (!row || !destination.host.startsWith(`library-${row.backend}.`) || destination.port.number !== row.port)
        fail(`${m.path} goes to ${destination.host}:${destination.port.number}, routes.tsv says ${row && row.backend}:${row && row.port}`);
      // A stream's route has no timeout at all: Istio's default is none, and `0s` is refused at admission.
      if (m.streaming && ("timeout" in route || (route.retries && route.retries.attempts !== 0))) fail(`${m.path} streams but its route has timeout ${route.timeout} / retries`);
      if (!m.streaming && (!route.timeout || route.timeout === "0s")) fail(`${m.path}: unary route without a timeout`);
      if (!m.streaming && !route.retries) fail(`${m.path}: unary route without a retry policy`);
    }
    const gateway = byKind(objects, "Gateway")[0];
    if (!gateway || !vs[0].spec.gateways.includes(gateway.metadata.name)) fail("the VirtualService is not bound to the Gateway");
  });
}

check("local gateway (tools/gateway from mesh/routes.tsv): every gRPC method's service has a location to its backend", (fail) => {
  if (!gatewayConf) return fail("no nginx.conf given (tools/gateway failed?)");
  const conf = readFileSync(gatewayConf, "utf8");
  for (const m of allMethods) {
    const row = routesTable.find((r) => r.service === m.service);
    const location = new RegExp(`location /${m.service.replace(/\./g, "\\.")}/ \\{\\s*grpc_pass grpc://backend_${row ? row.backend : "?"};`);
    if (!location.test(conf)) fail(`${m.path}: no location to ${row ? row.backend : "(no row)"}`);
  }
});

// --- authorization --------------------------------------------------------------------------------
const adminMethods = SERVICES.flatMap((s) => binaries[s].methods.filter((m) => m.access === "RPC_ACCESS_ADMIN").map((m) => `${binaries[s].grpcService}/${m.name}`));
const userMethods = SERVICES.flatMap((s) => binaries[s].methods.filter((m) => m.access !== "RPC_ACCESS_ADMIN").map((m) => `${binaries[s].grpcService}/${m.name}`));
check(`admin methods in the handlers (${adminMethods.length}: ${adminMethods.map((m) => m.split("/")[1]).join(", ")}) are exactly mesh.adminMethods`, (fail) => {
  const configured = chartValues.mesh.adminMethods;
  for (const m of adminMethods) if (!configured.includes(m)) fail(`${m} is admin-only in the handlers but not in mesh.adminMethods`);
  for (const m of configured) if (!adminMethods.includes(m)) fail(`${m} is in mesh.adminMethods but the handlers let any user call it`);
});
check("service-to-service calls in the sources (rpc_client_call paths) are allowed by mesh.serviceCalls", (fail) => {
  const configured = chartValues.mesh.serviceCalls;
  let found = 0;
  for (const service of SERVICES) {
    for (const call of binaries[service].calls) {
      if (!allMethods.some((m) => m.path === `/${call}`)) continue;
      found++;
      if (!configured.some((c) => c.from === service && c.methods.includes(call))) fail(`${service} calls ${call}, which mesh.serviceCalls does not allow`);
    }
  }
  if (!found) fail("no service-to-service call found in the sources (expected lending -> catalog GetBook)");
});

function pathMatches(pattern, path) {
  if (pattern === "*") return true;
  if (pattern.endsWith("*")) return path.startsWith(pattern.slice(0, -1));
  if (pattern.startsWith("*")) return path.endsWith(pattern.slice(1));
  return pattern === path;
}
// The ALLOW rules that let a call to path in, with what they require.
function allowingRules(policies, podLabels, path) {
  const rules = [];
  for (const p of policies) {
    if ((p.spec.action || "ALLOW") !== "ALLOW") continue;
    if (p.spec.selector && !labelsMatch(p.spec.selector.matchLabels, podLabels)) continue;
    for (const rule of p.spec.rules || []) {
      const to = rule.to || [{}];
      const reaches = to.some(({ operation = {} }) => {
        if (operation.ports) return false; // TCP rules (NATS, Redis)
        const inPaths = !operation.paths || operation.paths.some((x) => pathMatches(x, path));
        const inNotPaths = (operation.notPaths || []).some((x) => pathMatches(x, path));
        return inPaths && !inNotPaths;
      });
      if (reaches) rules.push({ policy: p.metadata.name, rule });
    }
  }
  return rules;
}
const requiresAdmin = (rule) => (rule.when || []).some((w) => w.key === "request.auth.claims[role]" && JSON.stringify(w.values) === JSON.stringify(["admin"]));
const requiresToken = (rule) => (rule.from || []).length > 0 && rule.from.every(({ source = {} }) => (source.requestPrincipals || []).length > 0 || (source.principals || []).length > 0);

for (const [name, objects] of Object.entries(meshSets)) {
  check(`${name}: AuthorizationPolicies: admin methods need role admin, user methods a token, health/reflection none, lending's ServiceAccount may call GetBook`, (fail) => {
    const policies = byKind(objects, "AuthorizationPolicy");
    const namespace = "library"; // both the mesh/istio render and the checked values use it
    const labels = (service) => ({ "app.kubernetes.io/name": "library", "app.kubernetes.io/instance": "library", "app.kubernetes.io/component": service });
    const backendOf = (path) => servedBy[path.split("/")[1]];
    for (const m of adminMethods) {
      const rules = allowingRules(policies, labels(backendOf(`/${m}`)), `/${m}`);
      if (!rules.length) fail(`admin method ${m}: no rule lets anyone call it`);
      for (const r of rules) if (!requiresAdmin(r.rule)) fail(`admin method ${m}: ${r.policy} lets it in without role admin`);
    }
    for (const m of userMethods) {
      const rules = allowingRules(policies, labels(backendOf(`/${m}`)), `/${m}`);
      if (!rules.some((r) => (r.rule.from || []).some(({ source = {} }) => (source.requestPrincipals || []).includes("*")) && !requiresAdmin(r.rule))) fail(`${m}: no rule lets a user with a token in`);
      for (const r of rules) if (!requiresToken(r.rule)) fail(`${m}: ${r.policy} lets it in without a token or peer identity`);
    }
    for (const s of systemServices) {
      for (const backend of SERVICES) {
        const path = `/${s.name}/${s.methods[0].name}`;
        if (!allowingRules(policies, labels(backend), path).some((r) => !r.rule.from && !r.rule.when)) fail(`${path} on ${backend}: not open (probes, grpcurl list)`);
      }
    }
    for (const call of chartValues.mesh.serviceCalls) {
      for (const method of call.methods) {
        const principal = `cluster.local/ns/${namespace}/sa/library-${call.from}`;
        const rules = allowingRules(policies, labels(backendOf(`/${method}`)), `/${method}`);
        if (!rules.some((r) => (r.rule.from || []).some(({ source = {} }) => (source.principals || []).includes(principal)))) fail(`${method}: ${principal} is not allowed`);
      }
    }
    const serviceAccounts = new Set(byKind(renders.default || [], "ServiceAccount").map((s) => s.metadata.name));
    for (const p of policies) {
      for (const rule of p.spec.rules || []) {
        for (const { source = {} } of rule.from || []) {
          for (const principal of source.principals || []) {
            const account = principal.split("/sa/")[1];
            if (serviceAccounts.size && !serviceAccounts.has(account)) fail(`${p.metadata.name}: principal ${principal} is no ServiceAccount of the chart`);
          }
        }
      }
    }
    const peer = byKind(objects, "PeerAuthentication");
    if (!peer.length || peer.some((p) => p.spec.mtls.mode !== "STRICT")) fail("PeerAuthentication is not STRICT");
    const requestAuth = byKind(objects, "RequestAuthentication");
    if (!requestAuth.length) fail("no RequestAuthentication");
    for (const ra of requestAuth) {
      for (const rule of ra.spec.jwtRules) {
        if (rule.issuer !== chartValues.config.jwtIssuer || !(rule.audiences || []).includes(chartValues.config.jwtAudience)) fail(`${ra.metadata.name}: issuer/audience differ from the services' JWT_ISSUER/JWT_AUDIENCE`);
        if (rule.forwardOriginalToken !== true) fail(`${ra.metadata.name}: the token is not passed on to the services, which need it`);
      }
    }
  });

  check(`${name}: DestinationRules give every service a connection pool and outlier detection (circuit breaking)`, (fail) => {
    const rules = byKind(objects, "DestinationRule");
    for (const service of SERVICES) {
      const dr = rules.find((r) => r.spec.host.startsWith(`library-${service}.`));
      if (!dr) fail(`${service}: no DestinationRule`);
      else {
        const policy = dr.spec.trafficPolicy || {};
        if (!policy.connectionPool || !policy.connectionPool.http) fail(`${service}: no HTTP connection pool`);
        if (!policy.outlierDetection) fail(`${service}: no outlier detection`);
      }
    }
  });
}

// --- Containerfiles and Jenkinsfile ---------------------------------------------------------------
check("Containerfiles: Debian 12 stages, tools/install --build, the service's ports, uid 10001 as in the chart, exec-form entrypoint", (fail) => {
  const normalized = [];
  for (const service of SERVICES) {
    const path = `services/${service}/Containerfile`;
    if (!existsSync(join(root, path))) {
      fail(`${path} is missing`);
      continue;
    }
    const text = read(path);
    const froms = [...text.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    if (froms.length < 2) fail(`${path}: not multi-stage`);
    for (const f of froms) if (!/^(docker\.io\/library\/)?debian:12(-slim)?$/.test(f) && !/^(docker\.io\/library\/)?debian:bookworm/.test(f)) fail(`${path}: FROM ${f} is not Debian 12`);
    if (!/RUN \.\/tools\/install --build/.test(text)) fail(`${path}: does not install with tools/install --build`);
    const b = binaries[service];
    const expose = (text.match(/^EXPOSE\s+(.+)$/m) || [])[1] || "";
    if (expose.split(/\s+/).map(Number).sort().join() !== [b.grpcPort, b.metricsPort].sort().join()) fail(`${path}: EXPOSE ${expose}, the service listens on ${b.grpcPort} and ${b.metricsPort}`);
    const user = (text.match(/^USER\s+(\d+)(?::(\d+))?\s*$/m) || [])[1];
    if (Number(user) !== chartValues.podSecurityContext.runAsUser) fail(`${path}: USER ${user}, the chart runs as ${chartValues.podSecurityContext.runAsUser}`);
    if (!text.includes(`ENTRYPOINT ["/usr/local/bin/${service}"]`)) fail(`${path}: ENTRYPOINT is not the exec form of /usr/local/bin/${service}`);
    if (!text.includes(`ninja -C /build services/${service}/${service}`)) fail(`${path}: does not build services/${service}/${service}`);
    for (const m of text.matchAll(/^COPY\s+(?!--from)(.+)$/gm)) {
      const parts = m[1].trim().split(/\s+/);
      for (const source of parts.slice(0, -1)) if (!existsSync(join(root, source))) fail(`${path}: COPY ${source}: no such path`);
    }
    normalized.push(text.replaceAll(service, "SERVICE").replaceAll(String(b.grpcPort), "GRPC").replaceAll(String(b.metricsPort), "METRICS"));
  }
  if (new Set(normalized).size > 1) fail("the three Containerfiles differ in more than the service's name and ports");
  const ignore = existsSync(join(root, ".containerignore")) ? read(".containerignore") : "";
  for (const entry of [".git", ".tools", "build*"]) if (!ignore.split("\n").includes(entry)) fail(`.containerignore does not leave out ${entry}`);
});

check("Jenkinsfile: runs tools/test, builds every Containerfile, helm upgrade --install --atomic, waits for every rollout", (fail) => {
  if (!existsSync(join(root, "Jenkinsfile"))) return fail("Jenkinsfile is missing");
  const text = read("Jenkinsfile");
  const open = (text.match(/\{/g) || []).length;
  const close = (text.match(/\}/g) || []).length;
  if (open !== close) fail(`unbalanced braces (${open} { and ${close} })`);
  if (!/^pipeline\s*\{/m.test(text)) fail("not a declarative pipeline");
  if (!text.includes("./tools/test")) fail("does not run ./tools/test");
  if (!/helm\S*"?\s+upgrade\s+--install[\s\S]*--atomic/.test(text)) fail("no helm upgrade --install --atomic");
  if (!text.includes("charts/library")) fail("does not deploy charts/library");
  for (const service of SERVICES) {
    if (!text.includes(`services/${service}/Containerfile`) && !/services\/\$\{?\w+\}?\/Containerfile/.test(text)) fail(`does not build services/${service}/Containerfile`);
  }
  if (!/rollout status/.test(text)) fail("does not wait with kubectl rollout status");
  for (const m of text.matchAll(/(?:^|[\s'"])(\.\/tools\/[\w./-]+|tools\/[\w./-]+)/g)) {
    const path = m[1].replace(/^\.\//, "");
    if (!existsSync(join(root, path))) fail(`refers to ${path}, which does not exist`);
  }
});

check("namespace: rendered with label istio-injection=enabled when namespace.create is on", (fail) => {
  const namespaces = Object.values(renders).flatMap((o) => byKind(o, "Namespace"));
  if (!namespaces.length) fail("no render has namespace.create on");
  for (const n of namespaces) if ((n.metadata.labels || {})["istio-injection"] !== "enabled") fail(`${n.metadata.name}: no istio-injection=enabled label`);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

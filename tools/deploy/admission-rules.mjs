// What the API server checks at admission beyond the OpenAPI schemas the models carry:
// the CEL rules (x-kubernetes-validations) of Istio's CRDs, from tools/deploy/istio-crd-rules.json,
// and Kubernetes' own name and port rules (DNS-1123/1035 names, label syntax, IANA port
// names, port ranges, probes and mounts naming what exists). validate-manifests.mjs calls
// admissionProblems() for every object; each problem is a line saying where and why.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { celEnvironment } from "./cel-environment.mjs";

const rulesFile = join(dirname(fileURLToPath(import.meta.url)), "istio-crd-rules.json");
const istio = JSON.parse(readFileSync(rulesFile, "utf8"));
const environment = celEnvironment();
const compiled = new Map();

// CEL's int is a BigInt here; YAML's integers arrive as JS numbers.
function celValue(value) {
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  if (Array.isArray(value)) return value.map(celValue);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, celValue(v)]));
  return value;
}

function ruleHolds(rule, self) {
  if (!compiled.has(rule)) compiled.set(rule, environment.parse(rule));
  return compiled.get(rule)({ self });
}

// Walks value along its pruned schema, evaluating every rule on the way.
function celProblems(schema, value, path, problems) {
  if (value === undefined || value === null) return;
  for (const { rule, message } of schema.rules || []) {
    try {
      if (ruleHolds(rule, celValue(value)) !== true) problems.push(`${path}: ${message} (CRD rule: ${rule})`);
    } catch (error) {
      problems.push(`${path}: CRD rule ${rule} cannot be evaluated: ${error.message.split("\n")[0]}`);
    }
  }
  for (const [name, child] of Object.entries(schema.properties || {})) celProblems(child, value[name], `${path}.${name}`, problems);
  if (schema.items && Array.isArray(value)) value.forEach((item, i) => celProblems(schema.items, item, `${path}[${i}]`, problems));
  if (schema.additionalProperties && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) celProblems(schema.additionalProperties, child, `${path}.${key}`, problems);
  }
}

function istioProblems(object, problems) {
  const id = `${object.apiVersion} ${object.kind}`;
  const schema = istio.kinds[id];
  if (!schema) return problems.push(`no CEL rules known for ${id} (regenerate tools/deploy/istio-crd-rules.json)`);
  celProblems(schema, object, object.kind, problems);
}

// --- Kubernetes' name and port rules (k8s.io/apimachinery/pkg/util/validation) --------------
const label1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const label1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const labelValue = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

const isLabel = (s) => typeof s === "string" && s.length <= 63 && label1123.test(s);
const isSubdomain = (s) => typeof s === "string" && s.length <= 253 && s.split(".").every(isLabel);
const isDns1035 = (s) => typeof s === "string" && s.length <= 63 && label1035.test(s);
const isPort = (n) => Number.isInteger(n) && n >= 1 && n <= 65535;
// IANA_SVC_NAME: at most 15 characters, lower case letters, digits and single inner hyphens, a letter somewhere.
const isPortName = (s) => typeof s === "string" && s.length <= 15 && label1123.test(s) && !s.includes("--") && /[a-z]/.test(s);
const isPortOrName = (p) => (typeof p === "string" ? isPortName(p) : isPort(p));

function labelProblems(labels, path, problems) {
  for (const [key, value] of Object.entries(labels || {})) {
    const [prefix, name] = key.includes("/") ? key.split("/", 2) : [null, key];
    if ((prefix !== null && !isSubdomain(prefix)) || !name || name.length > 63 || !labelValue.test(name))
      problems.push(`${path}: label key ${JSON.stringify(key)} is not a valid label name`);
    if (typeof value !== "string" || value.length > 63 || !labelValue.test(value))
      problems.push(`${path}: label ${key} value ${JSON.stringify(value)} is not a valid label value (63 characters at most, alphanumeric at both ends)`);
  }
}

// Which name rule the API server applies to metadata.name of each kind.
const nameRules = {
  Service: [isDns1035, "a DNS-1035 label (63 characters at most, a lower-case letter first)"],
  Namespace: [isLabel, "a DNS-1123 label (63 characters at most)"],
  StatefulSet: [isLabel, "a DNS-1123 label: its pods' host names derive from it"],
  CronJob: [(s) => isSubdomain(s) && s.length <= 52, "a DNS-1123 subdomain of 52 characters at most (its Jobs add 11)"],
};
const subdomainRule = [isSubdomain, "a DNS-1123 subdomain (lower case, digits, '-' and '.', 253 characters at most)"];

function podSpecOf(object) {
  const spec = object.spec || {};
  if (object.kind === "Pod") return [spec, "spec"];
  if (object.kind === "CronJob") return [spec.jobTemplate?.spec?.template?.spec, "spec.jobTemplate.spec.template.spec"];
  if (spec.template?.spec?.containers) return [spec.template.spec, "spec.template.spec"];
  return [null, ""];
}

function probePortProblems(probe, where, portNames, problems) {
  if (!probe) return;
  const port = probe.grpc ? probe.grpc.port : (probe.httpGet || probe.tcpSocket || {}).port;
  if (port === undefined) return;
  if (probe.grpc ? !isPort(port) : !isPortOrName(port)) problems.push(`${where}: port ${JSON.stringify(port)} is not a port (1-65535)${probe.grpc ? "" : " or port name"}`);
  else if (typeof port === "string" && !portNames.has(port)) problems.push(`${where}: port ${port} names no port of the container`);
}

function containerProblems(container, path, volumes, problems) {
  if (!isLabel(container.name)) problems.push(`${path}.name ${JSON.stringify(container.name)} is not a DNS-1123 label`);
  const portNames = new Set();
  for (const [i, port] of (container.ports || []).entries()) {
    const where = `${path}.ports[${i}]`;
    if (!isPort(port.containerPort)) problems.push(`${where}.containerPort ${port.containerPort} is not in 1-65535`);
    if (port.hostPort !== undefined && !isPort(port.hostPort)) problems.push(`${where}.hostPort ${port.hostPort} is not in 1-65535`);
    if (port.name === undefined) continue;
    if (!isPortName(port.name)) problems.push(`${where}.name ${JSON.stringify(port.name)} is not an IANA service name (15 characters at most, lower case, a letter)`);
    if (portNames.has(port.name)) problems.push(`${where}.name ${port.name} is used twice`);
    portNames.add(port.name);
  }
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) probePortProblems(container[probe], `${path}.${probe}`, portNames, problems);
  for (const [i, mount] of (container.volumeMounts || []).entries()) {
    if (!volumes.has(mount.name)) problems.push(`${path}.volumeMounts[${i}]: no volume named ${mount.name}`);
  }
}

function podProblems(object, problems) {
  const [pod, path] = podSpecOf(object);
  if (!pod) return;
  // A StatefulSet's claim templates are volumes of its pods too.
  const volumes = new Set((object.spec.volumeClaimTemplates || []).map((claim) => claim.metadata?.name));
  for (const [i, volume] of (pod.volumes || []).entries()) {
    if (!isLabel(volume.name)) problems.push(`${path}.volumes[${i}].name ${JSON.stringify(volume.name)} is not a DNS-1123 label`);
    volumes.add(volume.name);
  }
  const names = new Set();
  for (const list of ["initContainers", "containers"]) {
    for (const [i, container] of (pod[list] || []).entries()) {
      if (names.has(container.name)) problems.push(`${path}.${list}[${i}]: container name ${container.name} is used twice`);
      names.add(container.name);
      containerProblems(container, `${path}.${list}[${i}]`, volumes, problems);
    }
  }
  const template = object.kind === "CronJob" ? object.spec.jobTemplate.spec.template : object.spec.template;
  if (template) labelProblems(template.metadata?.labels, `${path.replace(/\.spec$/, "")}.metadata.labels`, problems);
}

function serviceProblems(object, problems) {
  labelProblems(object.spec?.selector, "spec.selector", problems);
  const ports = object.spec?.ports || [];
  const names = new Set();
  for (const [i, port] of ports.entries()) {
    const where = `spec.ports[${i}]`;
    if (!isPort(port.port)) problems.push(`${where}.port ${port.port} is not in 1-65535`);
    if (port.targetPort !== undefined && !isPortOrName(port.targetPort)) problems.push(`${where}.targetPort ${JSON.stringify(port.targetPort)} is not a port or an IANA port name`);
    if (ports.length > 1 && !port.name) problems.push(`${where}: a Service with several ports must name each`);
    if (port.name !== undefined && !isLabel(port.name)) problems.push(`${where}.name ${JSON.stringify(port.name)} is not a DNS-1123 label`);
    if (port.name && names.has(port.name)) problems.push(`${where}.name ${port.name} is used twice`);
    names.add(port.name);
  }
}

function networkPolicyProblems(object, problems) {
  for (const direction of ["ingress", "egress"]) {
    for (const [i, rule] of (object.spec?.[direction] || []).entries()) {
      for (const [j, port] of (rule.ports || []).entries()) {
        if (port.port !== undefined && !isPortOrName(port.port)) problems.push(`spec.${direction}[${i}].ports[${j}].port ${JSON.stringify(port.port)} is not a port or an IANA port name`);
      }
    }
  }
}

function kubernetesProblems(object, problems) {
  const [valid, what] = nameRules[object.kind] || subdomainRule;
  const name = object.metadata?.name;
  if (typeof name === "string" && !valid(name)) problems.push(`metadata.name ${JSON.stringify(name)} is not ${what}`);
  if (object.metadata?.namespace !== undefined && !isLabel(object.metadata.namespace)) problems.push(`metadata.namespace ${JSON.stringify(object.metadata.namespace)} is not a DNS-1123 label`);
  labelProblems(object.metadata?.labels, "metadata.labels", problems);
  labelProblems(object.spec?.selector?.matchLabels, "spec.selector.matchLabels", problems);
  podProblems(object, problems);
  if (object.kind === "Service") serviceProblems(object, problems);
  if (object.kind === "NetworkPolicy") networkPolicyProblems(object, problems);
}

export const istioRulesSource = istio.source;

export function admissionProblems(object) {
  const problems = [];
  kubernetesProblems(object, problems);
  if (/\.istio\.io\//.test(object.apiVersion)) istioProblems(object, problems);
  return problems;
}

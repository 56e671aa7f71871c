// Validates Kubernetes and Istio manifests offline against the schemas shipped in npm's
// kubernetes-models and @kubernetes-models/istio, refuses fields those schemas do not
// know (the API server would drop them silently, or reject them with strict validation), and
// applies what admission checks beyond those schemas: Istio's CRD CEL rules and Kubernetes'
// name and port rules (admission-rules.mjs).
//
//   node tools/deploy/validate-manifests.mjs FILE...     (multi-document YAML; - is stdin)
//
// Prints one line per object and ends with "N objects valid, N invalid"; exits 1 when any
// object is invalid, has an unknown field, has no schema, or is defined twice.
//
// Unknown fields: the generated validators accept any extra property (Kubernetes' OpenAPI
// has no additionalProperties: false), but they read every property the schema names. So
// each object is validated through a Proxy that records the properties read; a property
// that was never read is one the schema does not have. Maps (labels, data) are read key by
// key by their additionalProperties schema, so they count as read.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { admissionProblems } from "./admission-rules.mjs";
import { modules, yamlModule } from "./node-modules.mjs";

const YAML = await yamlModule();

// apiVersion -> folder of its models.
function modelFolder(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group.endsWith(".istio.io")) return join(modules, "@kubernetes-models", "istio", group, version);
  return join(modules, "kubernetes-models", group || "", version);
}

const modelCache = new Map();
async function modelFor(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (!modelCache.has(key)) {
    const file = join(modelFolder(apiVersion), `${kind}.js`);
    let model = null;
    if (/^[A-Za-z0-9.\/-]+$/.test(apiVersion) && /^[A-Z][A-Za-z0-9]*$/.test(kind) && existsSync(file)) {
      const exported = (await import(pathToFileURL(file)))[kind];
      if (exported && exported.apiVersion === apiVersion && exported.kind === kind) model = exported;
    }
    modelCache.set(key, model);
  }
  return modelCache.get(key);
}

// A view of value that records, for every object and array inside it, which keys were read.
function tracked(value, path, records) {
  if (value === null || typeof value !== "object") return value;
  const read = new Set();
  records.push({ value, path, read });
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const child = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return child;
      read.add(key);
      if (child === null || typeof child !== "object") return child;
      if (!children.has(key)) children.set(key, tracked(child, `${path}/${key}`, records));
      return children.get(key);
    },
  });
}

function errorText(error) {
  const details = error.errors || error.details;
  if (Array.isArray(details) && details.length) {
    return details
      .map((d) => `${d.instancePath || "/"} ${d.message || d.keyword}${d.params ? " " + JSON.stringify(d.params) : ""}`)
      .join("; ");
  }
  return error.message;
}

async function check(document) {
  const problems = [];
  if (document === null || typeof document !== "object" || Array.isArray(document)) {
    return ["not a mapping"];
  }
  const { apiVersion, kind } = document;
  if (typeof apiVersion !== "string" || typeof kind !== "string") return ["no apiVersion or kind"];
  const model = await modelFor(apiVersion, kind);
  if (!model) return [`no schema for ${apiVersion} ${kind}`];
  if (!document.metadata || typeof document.metadata.name !== "string" || !document.metadata.name) {
    problems.push("metadata.name is missing");
  }
  const records = [];
  try {
    model.prototype.validate.call(tracked(document, "", records));
  } catch (error) {
    problems.push(errorText(error));
  }
  for (const { value, path, read } of records) {
    for (const key of Object.keys(value)) {
      if (!read.has(key)) problems.push(`${path}/${key}: unknown field`);
    }
  }
  problems.push(...admissionProblems(document));
  return problems;
}

const files = process.argv.slice(2);
if (!files.length) {
  console.error("usage: validate-manifests.mjs FILE...");
  process.exit(2);
}
let valid = 0;
let invalid = 0;
for (const file of files) {
  const seen = new Map(); // one file is one apply: a kind/namespace/name may appear once
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  const documents = YAML.parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
  for (const document of documents) {
    const problems = [...document.errors.map((e) => `YAML: ${e.message}`), ...document.warnings.map((w) => `YAML: ${w.message}`)];
    const object = problems.length ? null : document.toJS({ maxAliasCount: 0 });
    if (object === null && !problems.length) continue; // an empty document (--- with comments only)
    if (object) problems.push(...(await check(object)));
    const name = object && object.metadata ? object.metadata.name : "?";
    const id = object ? `${object.kind}/${object.metadata && object.metadata.namespace ? object.metadata.namespace + "/" : ""}${name}` : "?";
    if (object) {
      const identity = `${object.apiVersion.split("/")[0].includes(".") ? object.apiVersion.split("/")[0] : ""} ${id}`;
      if (seen.has(identity)) problems.push("defined twice in this file");
      seen.set(identity, true);
    }
    if (problems.length) {
      invalid++;
      console.log(`FAIL  ${file}: ${id}`);
      for (const problem of problems) console.log(`        ${problem}`);
    } else {
      valid++;
      console.log(`ok    ${file}: ${id}`);
    }
  }
}
console.log(`${valid} objects valid, ${invalid} invalid`);
process.exit(invalid || !valid ? 1 : 0);

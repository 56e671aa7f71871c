// Checks a render's credentials: every service logs in to NATS as its own user and mypage to
// Redis as its ACL user, with passwords from the credentials Secret (secretKeyRef, never a
// literal); the in-chart NATS gets every password its users file names and includes it; the
// in-chart Redis runs in protected mode with its users; and no service user may publish
// another's events (files/nats-users.conf).
//
//   node tools/deploy/credentials.mjs RENDER.yaml       prints problems, exits 1 on any
//   node tools/deploy/credentials.mjs RENDER.yaml redis  prints the Redis pod's files as JSON
import { readFileSync } from "node:fs";
import { yamlModule } from "./node-modules.mjs";

const [file, mode] = process.argv.slice(2);
const YAML = await yamlModule();
const objects = YAML.parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean);
const SERVICES = ["catalog", "lending", "mypage"];
const problems = [];
const fail = (text) => problems.push(text);

const secret = objects.find((o) => o.kind === "Secret" && o.metadata.name.endsWith("-credentials"));
const secretName = secret ? secret.metadata.name : "library-credentials";
const find = (kind, suffix) => objects.find((o) => o.kind === kind && o.metadata.name.endsWith(suffix));
const podSpec = (o) => (o.kind === "CronJob" ? o.spec.jobTemplate.spec.template.spec : o.spec.template.spec);
const envOf = (o) => podSpec(o).containers[0].env || [];

function expectSecretRef(where, env, name, key) {
  const entry = env.find((e) => e.name === name);
  const ref = entry && entry.valueFrom && entry.valueFrom.secretKeyRef;
  if (!ref) return fail(`${where}: ${name} does not come from a Secret`);
  if (ref.name !== secretName || ref.key !== key) fail(`${where}: ${name} comes from ${ref.name}/${ref.key}, want ${secretName}/${key}`);
}

function expectValue(where, env, name, value) {
  const entry = env.find((e) => e.name === name);
  if (!entry || entry.value !== value) fail(`${where}: ${name} is ${entry ? JSON.stringify(entry.value) : "unset"}, want ${value}`);
}

function servicesLogIn() {
  const workloads = SERVICES.map((s) => [s, find("Deployment", `-${s}`)]);
  const rebuild = find("CronJob", "-mypage-rebuild");
  if (rebuild) workloads.push(["mypage", rebuild]);
  for (const [service, workload] of workloads) {
    if (!workload) {
      fail(`no workload of ${service}`);
      continue;
    }
    const where = `${workload.kind}/${workload.metadata.name}`;
    const env = envOf(workload);
    expectValue(where, env, "NATS_USER", service);
    expectSecretRef(where, env, "NATS_PASSWORD", `nats-${service}`);
    if (service === "mypage") {
      expectValue(where, env, "REDIS_USER", "mypage");
      expectSecretRef(where, env, "REDIS_PASSWORD", "redis-mypage");
    }
  }
  if (secret) {
    for (const key of ["nats-admin", "nats-catalog", "nats-lending", "nats-mypage", "redis-admin", "redis-mypage"]) {
      if (!secret.data || !secret.data[key]) fail(`Secret ${secretName} has no ${key}`);
    }
  }
}

function natsServerHasUsers() {
  const map = find("ConfigMap", "-nats");
  const server = find("StatefulSet", "-nats");
  if (!map || !server) return;
  const users = map.data["nats-users.conf"] || "";
  if (!/^\s*include nats-users.conf\s*$/m.test(map.data["nats.conf"])) fail("nats.conf does not include nats-users.conf");
  for (const [, user] of users.matchAll(/\$NATS_([A-Z]+)_PASSWORD/g)) {
    expectSecretRef(`StatefulSet/${server.metadata.name}`, envOf(server), `NATS_${user}_PASSWORD`, `nats-${user.toLowerCase()}`);
  }
  // least privilege: the publish list of each service user
  const owns = { catalog: ["library.events.copy."], lending: ["library.events.loan.", "library.events.restated"], mypage: [] };
  for (const service of SERVICES) {
    const block = (users.match(new RegExp(`user: ${service}\\n[\\s\\S]*?publish: \\[([\\s\\S]*?)\\]`)) || [])[1];
    if (!block) {
      fail(`nats-users.conf: no publish list for ${service}`);
      continue;
    }
    for (const [, subject] of block.matchAll(/"([^"]+)"/g)) {
      if (subject.startsWith("library.events.") && !owns[service].some((own) => subject.startsWith(own)))
        fail(`nats-users.conf: ${service} may publish ${subject}, another service's events`);
      if (subject === ">" || subject === "library.>" || subject === "$JS.API.>") fail(`nats-users.conf: ${service} may publish ${subject}`);
    }
  }
}

function redisFiles() {
  const map = find("ConfigMap", "-redis");
  const server = find("StatefulSet", "-redis");
  if (!map || !server) return null;
  const container = podSpec(server).containers[0];
  return { conf: map.data["redis.conf"], acl: map.data["mypage.acl"] || "", script: (container.command || [])[2] || "" };
}

function redisHasUsers() {
  const files = redisFiles();
  if (!files) return;
  const server = find("StatefulSet", "-redis");
  const where = `StatefulSet/${server.metadata.name}`;
  if (!/^\s*protected-mode yes\s*$/m.test(files.conf)) fail("redis.conf: protected-mode is not yes");
  if (!/^\s*include \/run\/redis\/users.conf\s*$/m.test(files.conf)) fail("redis.conf does not include /run/redis/users.conf");
  for (const [name, key] of [["REDIS_ADMIN_PASSWORD", "redis-admin"], ["REDIS_MYPAGE_PASSWORD", "redis-mypage"], ["REDISCLI_AUTH", "redis-admin"]])
    expectSecretRef(where, envOf(server), name, key);
}

if (mode === "redis") {
  process.stdout.write(JSON.stringify(redisFiles()));
  process.exit(0);
}
servicesLogIn();
natsServerHasUsers();
redisHasUsers();
for (const problem of problems) console.log(problem);
process.exit(problems.length ? 1 : 0);

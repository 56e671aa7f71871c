// The CEL environment the Kubernetes API server gives CRD validation rules, as far as
// Istio's rules use it: the standard library (@marcbachmann/cel-js) plus Kubernetes' url()
// extension. `self` is the value at the rule's place in the schema.
import { celModule } from "./node-modules.mjs";

const { Environment } = await celModule();

// Kubernetes' URL type: url(string) refuses what Go's url.Parse refuses for a request URI.
class KubernetesUrl {
  constructor(text) {
    if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) && !text.startsWith("/")) {
      throw new Error(`url: ${JSON.stringify(text)} is not an absolute URI or path`);
    }
    this.parsed = new URL(text, "http://relative.invalid");
    this.relative = text.startsWith("/");
  }
}

export function celEnvironment() {
  return new Environment({ unlistedVariablesAreDyn: true, homogeneousAggregateLiterals: false })
    .registerType("URL", KubernetesUrl)
    .registerFunction("url(string): URL", (text) => new KubernetesUrl(text))
    .registerFunction("isURL(string): bool", (text) => {
      try {
        return Boolean(new KubernetesUrl(text));
      } catch {
        return false;
      }
    })
    .registerFunction("URL.getScheme(): string", (u) => (u.relative ? "" : u.parsed.protocol.replace(/:$/, "")))
    .registerFunction("URL.getHost(): string", (u) => (u.relative ? "" : u.parsed.host))
    .registerFunction("URL.getHostname(): string", (u) => (u.relative ? "" : u.parsed.hostname))
    .registerFunction("URL.getPath(): string", (u) => u.parsed.pathname);
}

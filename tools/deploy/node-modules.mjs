// Where tools/install put the npm tools (.tools/node_modules, or LIBRARY_NODE_MODULES), and
// loaders for the ones the deployment checks import.
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const modules = process.env.LIBRARY_NODE_MODULES || join(root, ".tools", "node_modules");

export async function yamlModule() {
  return (await import(pathToFileURL(join(modules, "yaml", "dist", "index.js")))).default;
}

export async function celModule() {
  return import(pathToFileURL(join(modules, "@marcbachmann", "cel-js", "lib", "index.js")));
}

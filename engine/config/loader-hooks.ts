// Node module hooks (module.register) that let a config be TypeScript: `.ts` files are
// transpiled with the TypeScript compiler API (transpileModule, inline source maps so that
// stack traces point into the .ts file), and the specifier "osbuild" resolves to this
// package. Transpiled output is cached by content, so an unchanged config costs no compiler.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export interface HookData {
  /** file: URL of the package entry that "osbuild" resolves to. */
  osbuildEntry: string;
  /** Directory for cached transpiled output. */
  cacheDir: string;
}

interface ResolveContext {
  parentURL?: string;
  conditions: string[];
}
type ResolveResult = { url: string; format?: string | null; shortCircuit?: boolean };
type NextResolve = (specifier: string, context?: ResolveContext) => Promise<ResolveResult>;
type LoadResult = { format: string; source?: string | Buffer; shortCircuit?: boolean };
type NextLoad = (url: string, context?: { format?: string | null }) => Promise<LoadResult>;

let data: HookData;
let typescript: typeof import("typescript") | undefined;

export function initialize(hookData: HookData): void {
  data = hookData;
  mkdirSync(data.cacheDir, { recursive: true });
}

export async function resolve(specifier: string, context: ResolveContext, nextResolve: NextResolve): Promise<ResolveResult> {
  if (specifier === "osbuild") return { url: data.osbuildEntry, shortCircuit: true };
  const parent = context.parentURL;
  const fromTypeScript = parent?.startsWith("file:") && /\.[mc]?ts$/.test(parent);
  if (fromTypeScript && (specifier.startsWith("./") || specifier.startsWith("../"))) {
    // TypeScript habits: "./steps.js" for steps.ts, or no extension at all.
    const base = new URL(specifier, parent);
    const candidates = [base.href];
    if (/\.js$/.test(base.pathname)) candidates.push(base.href.replace(/\.js$/, ".ts"));
    if (!/\.[a-z]+$/.test(base.pathname)) candidates.push(`${base.href}.ts`, `${base.href}/index.ts`);
    for (const candidate of candidates) {
      if (existsSync(fileURLToPath(candidate))) return { url: candidate, shortCircuit: true };
    }
  }
  return nextResolve(specifier, context);
}

export async function load(url: string, context: { format?: string | null }, nextLoad: NextLoad): Promise<LoadResult> {
  if (!url.startsWith("file:") || !/\.[mc]?ts$/.test(new URL(url).pathname)) return nextLoad(url, context);
  const file = fileURLToPath(url);
  const source = readFileSync(file, "utf8");
  return { format: "module", source: await transpile(file, source), shortCircuit: true };
}

async function transpile(file: string, source: string): Promise<string> {
  const key = createHash("sha256").update(`${TRANSPILE_VERSION}\0${file}\0${source}`).digest("hex");
  const cached = join(data.cacheDir, `${key}.js`);
  if (existsSync(cached)) return readFileSync(cached, "utf8");
  typescript ??= createRequire(import.meta.url)("typescript") as typeof import("typescript");
  const ts = typescript;
  const output = ts.transpileModule(source, {
    fileName: file,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      inlineSourceMap: true,
      inlineSources: false,
      verbatimModuleSyntax: false,
    },
  }).outputText;
  const temp = `${cached}.${process.pid}.tmp`;
  writeFileSync(temp, output);
  renameSync(temp, cached);
  return output;
}

/** Bump when the transpile options change. */
const TRANSPILE_VERSION = 1;

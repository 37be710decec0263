// A config compiled to plain ES modules and kept in the cache, so that loading an unchanged
// config costs neither the TypeScript compiler nor Node's module hooks (module.register runs
// every later import through a worker thread: ~0.1 s at start-up, and every import slower).
//
// Each local .ts file of the config is transpiled once, its import specifiers rewritten to
// what the hooks would have resolved them to: "osbuild" → this package's entry, a local .ts
// module → its compiled file, any other local file → its absolute URL; `import.meta.url`,
// `.filename` and `.dirname` → the original file's. The source maps name the original files,
// so stack traces (and the file:line:col of every step) point into the .ts sources. The
// compiled files of one version of the config live in a directory named by the content of
// every file, so two versions never share one; a memo maps the config to it, checked by
// hashing the files (small) on every load. A config this cannot compile faithfully (a bare
// package import other than "osbuild", an import() of a computed name, import.meta.resolve)
// is loaded through the hooks instead, as before.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { builtinModules, createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { readMemoFile, writeMemoFile } from "../memo.js";

/** Bump when the compiled form changes. */
const COMPILE_VERSION = 1;

interface CompiledMemo {
  [configFile: string]: { identity: string; files: Record<string, string>; entry: string };
}

export interface CompileSettings {
  /** file: URL that "osbuild" means. */
  osbuildEntry: string;
  /** Where compiled configs are kept. */
  dir: string;
  memoFile: string;
}

/** The compiled entry of `configFile` when every file it was compiled from is unchanged. */
export function compiledEntry(configFile: string, settings: CompileSettings): string | undefined {
  const known = readMemoFile<CompiledMemo>(settings.memoFile, {})[configFile];
  if (!known || known.identity !== identity(settings)) return undefined;
  if (!Object.entries(known.files).every(([file, hash]) => hashOf(file) === hash)) return undefined;
  return existsSync(known.entry) ? known.entry : undefined;
}

/**
 * Removes the compiled configs no memo entry points at (earlier versions of a config, and
 * configs whose file is gone); returns how many. For `cache prune`, when no build runs.
 */
export function pruneCompiled(dir: string, memoFile: string): number {
  if (!existsSync(dir)) return 0;
  const memo = readMemoFile<CompiledMemo>(memoFile, {});
  for (const configFile of Object.keys(memo)) if (!existsSync(configFile)) delete memo[configFile];
  writeMemoFile(memoFile, memo);
  const live = new Set(Object.values(memo).map((known) => dirname(known.entry)));
  let removed = 0;
  for (const name of readdirSync(dir)) {
    if (name.includes(".tmp-") || live.has(join(dir, name))) continue; // being written, or in use
    rmSync(join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/**
 * Compiles `configFile` and the local modules it imports; returns the entry to import, or
 * undefined when the config needs the module hooks (see above).
 */
export function compileConfig(configFile: string, settings: CompileSettings): string | undefined {
  const ts = createRequire(import.meta.url)("typescript") as typeof import("typescript");
  const sources = new Map<string, { text: string; hash: string }>();
  const pending = [configFile];
  const outputs = new Map<string, { code: string; imports: Map<string, string> }>();
  // First pass: transpile each file, collecting the local .ts modules it imports.
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (outputs.has(file)) continue;
    const text = readFileSync(file, "utf8");
    sources.set(file, { text, hash: sha256(text) });
    const result = transpile(ts, file, text, settings.osbuildEntry);
    if (!result) return undefined;
    outputs.set(file, result);
    for (const target of result.imports.values()) if (target.endsWith(".ts") && !outputs.has(target)) pending.push(target);
  }
  const snapshot = sha256(JSON.stringify([COMPILE_VERSION, identity(settings), [...sources].map(([file, source]) => [file, source.hash]).sort()]));
  const dir = join(settings.dir, snapshot);
  const nameOf = (file: string): string => `${sha256(file).slice(0, 16)}.mjs`;
  if (!existsSync(dir)) {
    const temp = `${dir}.tmp-${process.pid}`;
    mkdirSync(temp, { recursive: true });
    for (const [file, output] of outputs) {
      let code = output.code;
      for (const [placeholder, target] of output.imports) code = code.split(placeholder).join(target.endsWith(".ts") ? `./${nameOf(target)}` : target);
      writeFileSync(join(temp, nameOf(file)), code);
    }
    try {
      renameSync(temp, dir);
    } catch {
      rmSync(temp, { recursive: true, force: true }); // another process compiled the same snapshot
    }
  }
  const entry = join(dir, nameOf(configFile));
  const memo = readMemoFile<CompiledMemo>(settings.memoFile, {});
  memo[configFile] = { identity: identity(settings), files: Object.fromEntries([...sources].map(([file, source]) => [file, source.hash])), entry };
  writeMemoFile(settings.memoFile, memo);
  return entry;
}

/**
 * One file transpiled, its specifiers replaced by placeholders (filled in once every file's
 * compiled name is known), its source map naming the original file. Undefined when the file
 * does something only the hooks can serve.
 */
function transpile(ts: typeof import("typescript"), file: string, text: string, osbuildEntry: string): { code: string; imports: Map<string, string> } | undefined {
  const imports = new Map<string, string>();
  let unsupported = false;
  const fileUrl = pathToFileURL(file).href;
  const placeholderFor = (specifier: string): string | undefined => {
    const target = specifier === "osbuild" ? osbuildEntry : resolveSpecifier(specifier, file);
    if (target === undefined) {
      unsupported = true;
      return undefined;
    }
    const placeholder = `__osbuild_import_${imports.size}_${sha256(file).slice(0, 8)}__`;
    imports.set(placeholder, target);
    return placeholder;
  };
  // After TypeScript's own transforms, so that imports used only as types are already gone.
  const rewrite: import("typescript").TransformerFactory<import("typescript").SourceFile> = (context) => {
    const f = context.factory;
    const visit = (node: import("typescript").Node): import("typescript").Node => {
      if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
        const placeholder = placeholderFor(node.moduleSpecifier.text);
        if (placeholder === undefined) return node;
        return ts.isImportDeclaration(node)
          ? f.updateImportDeclaration(node, node.modifiers, node.importClause, f.createStringLiteral(placeholder), node.attributes)
          : f.updateExportDeclaration(node, node.modifiers, node.isTypeOnly, node.exportClause, f.createStringLiteral(placeholder), node.attributes);
      }
      if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
        const [first, ...rest] = node.arguments;
        if (!first || !ts.isStringLiteralLike(first)) {
          unsupported = true;
          return node;
        }
        const placeholder = placeholderFor(first.text);
        if (placeholder === undefined) return node;
        return f.updateCallExpression(node, node.expression, node.typeArguments, [f.createStringLiteral(placeholder), ...rest.map((argument) => ts.visitNode(argument, visit) as import("typescript").Expression)]);
      }
      if (ts.isMetaProperty(node) && node.keywordToken === ts.SyntaxKind.ImportKeyword) {
        const parent = node.parent;
        const property = parent && ts.isPropertyAccessExpression(parent) && parent.expression === node ? parent.name.text : undefined;
        if (property !== "url" && property !== "filename" && property !== "dirname") unsupported = true;
        return node;
      }
      if (ts.isPropertyAccessExpression(node) && ts.isMetaProperty(node.expression) && node.expression.keywordToken === ts.SyntaxKind.ImportKeyword) {
        const value = node.name.text === "url" ? fileUrl : node.name.text === "filename" ? file : node.name.text === "dirname" ? dirname(file) : undefined;
        if (value !== undefined) return f.createStringLiteral(value);
        unsupported = true;
        return node;
      }
      return ts.visitEachChild(node, visit, context);
    };
    return (source) => ts.visitNode(source, visit) as import("typescript").SourceFile;
  };
  const output = ts.transpileModule(text, {
    fileName: file,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, sourceMap: true, inlineSources: false, verbatimModuleSyntax: false },
    transformers: { after: [rewrite] },
  });
  if (unsupported) return undefined;
  const map = JSON.parse(output.sourceMapText ?? "{}") as { sources?: string[]; sourceRoot?: string };
  map.sources = [fileUrl];
  delete map.sourceRoot;
  const code = output.outputText.replace(/\/\/# sourceMappingURL=.*\s*$/, "");
  return { code: `${code}\n//# sourceMappingURL=data:application/json;base64,${Buffer.from(JSON.stringify(map)).toString("base64")}\n`, imports };
}

/** What a specifier of `from` resolves to: a local file's path, a URL, or undefined when only the hooks can tell. */
function resolveSpecifier(specifier: string, from: string): string | undefined {
  if (specifier.startsWith("node:") || builtinModules.includes(specifier)) return specifier;
  if (!specifier.startsWith("./") && !specifier.startsWith("../")) return undefined; // a package: resolved from the config's folder
  const base = new URL(specifier, pathToFileURL(from));
  // As the hooks do: "./steps.js" for steps.ts, or no extension at all.
  const candidates = [base.href];
  if (/\.js$/.test(base.pathname)) candidates.push(base.href.replace(/\.js$/, ".ts"));
  if (!/\.[a-z]+$/.test(base.pathname)) candidates.push(`${base.href}.ts`, `${base.href}/index.ts`);
  for (const candidate of candidates) {
    const path = fileURLToPath(candidate);
    if (!existsSync(path)) continue;
    if (/\.[mc]?ts$/.test(path)) return path.endsWith(".ts") ? path : undefined;
    return candidate; // loaded as it is now (JSON with its import attribute), not compiled
  }
  return undefined;
}

/** What the compiled form depends on besides the config: the compiler's and osbuild's place and version. */
let typescriptVersion: string | undefined;

function identity(settings: CompileSettings): string {
  typescriptVersion ??= readTypescriptVersion();
  return `${COMPILE_VERSION}:${typescriptVersion}:${settings.osbuildEntry}`;
}

function readTypescriptVersion(): string {
  let typescript = "unknown";
  try {
    typescript = (JSON.parse(readFileSync(createRequire(import.meta.url).resolve("typescript/package.json"), "utf8")) as { version: string }).version;
  } catch {
    /* compiled by whatever is there */
  }
  return typescript;
}

function hashOf(file: string): string {
  try {
    return sha256(readFileSync(file, "utf8"));
  } catch {
    return "missing";
  }
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
